"""Routing and flow control: queues, priorities, unique jobs, per-task
concurrency and rate limits, pauses and bulk actions.

The service delegates here (``service.py`` keeps the job life cycle).
``docs/routing.md`` is the design note; in short:

- **Lanes.**  Waiting jobs sit in one ``structures.JobQueue`` per
  ``(queue, priority)`` pair, a *lane*; ``Routing.lanes`` maps
  ``(queue, -priority)`` to it, so iterating one queue's lanes goes from
  the highest priority down.  The service's original ``_queue`` is the lane
  ``('default', 0)``: a service that never uses routing works exactly as
  before, and an old database needs no migration.  An add or a claim
  touches one lane's partitions, as before; a claim visits lanes in order
  and skips an empty one by its counters (small objects).
- **Unique keys** are an ``OOBTree`` ``key -> job id``.  Two transactions
  that add a job with the same key both write that key: BTrees can not
  merge that, one of them gets a ``ConflictError``, is retried, and finds
  the other's job.
- **Concurrency**: a task with ``concurrency=N`` has N ``_Slot`` objects;
  a claim takes a free one by writing it, the job's end frees it.  Two
  claims that take the same slot conflict (one retries), claims that take
  different slots do not; so no race lets N be overshot.  (A counter that
  resolves its own conflicts, like ``BTrees.Length``, would let two claims
  that both saw N-1 commit: it can count, not limit.)
- **Rate limits**: a task with ``rate_limit='N/s'`` has a ``_Rate``, the
  times of its last N starts; a claim may start a job if the oldest of them
  is a period ago, and writes it: claims of one rate-limited task are
  serialized by conflicts, which is what a limit across hosts needs.
- **Pauses** are an ``OOBTree`` ``(queue or '', task or '') -> time``.

Every decision (is the key taken, is a slot free, is there budget, is it
paused) is made in the transaction of the add or the claim that acts on it.
"""
import heapq
import math
import random
import re

import persistent
from BTrees.OOBTree import OOBTree

from remotetask.interfaces import (
    CRONJOB, DELAYED, PROCESSING, QUEUED, DEFERRED, STARTLATER,
    WAITING_STATUSES, InvalidInputError)
from remotetask.structures import JobQueue

#: The queue a job goes to when none is named.
DEFAULT_QUEUE = 'default'
#: Priorities are integers in this range (each one used in a queue is a
#: lane of its own: the range keeps their number bounded).
MIN_PRIORITY = -1000
MAX_PRIORITY = 1000
#: The longest queue name and unique key.
MAX_NAME = 200
MAX_KEY = 1000

#: How many due jobs a claim looks past, per lane, when the jobs it meets
#: are held back (a task at its concurrency or rate limit, a paused task, a
#: task this worker does not have).
SCAN_PAST = 256

_PERIODS = {'s': 1.0, 'm': 60.0, 'h': 3600.0}
_RATE = re.compile(r'^\s*(\d+)\s*/\s*([smh])\s*$')
#: Largest N of a rate limit (its state keeps the last N start times).
MAX_RATE = 10000

_rng = random.SystemRandom()


# -- Checking input ------------------------------------------------------------

def checkQueue(queue, what='queue'):
    """``queue`` if it is a valid queue name, else InvalidInputError."""
    if not isinstance(queue, str):
        raise InvalidInputError('%s must be a string (a queue name), not %r'
                                % (what, queue))
    if not queue.strip() or len(queue) > MAX_NAME or not queue.isprintable():
        raise InvalidInputError(
            '%s must be a non-blank printable name of at most %d '
            'characters, not %r' % (what, MAX_NAME, queue))
    return queue


def checkQueues(queues):
    """A worker's queue list: None (every queue) or a tuple of names, in
    the order they are drained."""
    if queues is None:
        return None
    if isinstance(queues, str):
        queues = (queues,)
    try:
        queues = tuple(queues)
    except TypeError:
        raise InvalidInputError('queues must be a list of queue names, not '
                                '%r' % (queues,))
    if not queues:
        raise InvalidInputError('queues must name at least one queue '
                                '(None: every queue)')
    seen = []
    for q in queues:
        checkQueue(q, 'a queue in queues')
        if q not in seen:
            seen.append(q)
    return tuple(seen)


def checkPriority(priority):
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise InvalidInputError('priority must be an integer, not %r'
                                % (priority,))
    if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise InvalidInputError('priority must be between %d and %d, not %d'
                                % (MIN_PRIORITY, MAX_PRIORITY, priority))
    return priority


def checkUniqueKey(key):
    if key is None:
        return None
    if not isinstance(key, str) or not key or len(key) > MAX_KEY:
        raise InvalidInputError(
            'unique_key must be a non-empty string of at most %d characters,'
            ' not %r' % (MAX_KEY, key))
    return key


def checkConcurrency(concurrency):
    """A task's ``concurrency``: None (no limit) or an integer >= 1."""
    if concurrency is None:
        return None
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) \
            or concurrency < 1:
        raise InvalidInputError(
            'concurrency must be an integer >= 1 (or None: no limit), not %r'
            % (concurrency,))
    return concurrency


def parseRate(rate):
    """``'N/s'``, ``'N/m'`` or ``'N/h'`` as ``(N, seconds)``; None stays
    None.  Anything else is an InvalidInputError."""
    if rate is None:
        return None
    match = _RATE.match(rate) if isinstance(rate, str) else None
    if match is None:
        raise InvalidInputError(
            "rate_limit must be 'N/s', 'N/m' or 'N/h' (N starts per second,"
            " minute or hour), not %r" % (rate,))
    n = int(match.group(1))
    if not 1 <= n <= MAX_RATE:
        raise InvalidInputError('rate_limit: N must be between 1 and %d, '
                                'not %d (%r)' % (MAX_RATE, n, rate))
    return n, _PERIODS[match.group(2)]


def checkFilter(queue=None, task=None):
    """A (queue, task) filter of pauses and bulk actions."""
    if queue is not None:
        checkQueue(queue)
    if task is not None and (not isinstance(task, str) or not task):
        raise InvalidInputError('task must be a task name (a string), not %r'
                                % (task,))
    return queue, task


# -- The persistent state ------------------------------------------------------

class _Slot(persistent.Persistent):
    """One of the N places of a task with ``concurrency=N``: the id of the
    job that holds it, or None."""

    jobid = None


class _Slots(persistent.Persistent):
    """A task's concurrency slots (written only when their number grows)."""

    def __init__(self):
        self.slots = ()


class _Rate(persistent.Persistent):
    """The start times of a rate-limited task's last N starts."""

    def __init__(self):
        self.starts = ()


class Routing(persistent.Persistent):
    """The routing state of a service (``service._routing``)."""

    def __init__(self, defaultLane):
        self.lanes = OOBTree()      # (queue, -priority) -> JobQueue
        self.lanes[(DEFAULT_QUEUE, 0)] = defaultLane
        self.unique = OOBTree()     # unique key -> job id
        self.pauses = OOBTree()     # (queue or '', task or '') -> time
        self.slots = OOBTree()      # task -> _Slots
        self.rates = OOBTree()      # task -> _Rate


def state(service, create=False):
    """The service's Routing, or None if it has none yet and not
    ``create``.  A service made by an older version gets one on its first
    use of routing (that transaction writes the service object once)."""
    routing = getattr(service, '_routing', None)
    if routing is None and create:
        routing = service._routing = Routing(service._queue)
    return routing


def jobQueue(job):
    return getattr(job, 'queue', DEFAULT_QUEUE)


def jobPriority(job):
    return getattr(job, 'priority', 0)


def lane(service, job, create=False):
    """The JobQueue a waiting ``job`` is (or goes) in."""
    queue, priority = jobQueue(job), jobPriority(job)
    if queue == DEFAULT_QUEUE and priority == 0:
        return service._queue
    routing = state(service, create)
    key = (queue, -priority)
    found = None if routing is None else routing.lanes.get(key)
    if found is None and create:
        # Laid out as the default lane: the jobs of one producer spread
        # over several partitions, where concurrent workers take them
        # without meeting (with one partition per producer's lane, the
        # workers' retries went from about 20 % to 23-39 % in the bench).
        found = routing.lanes[key] = JobQueue()
    if found is None:
        raise KeyError('no lane %r' % (key,))
    return found


def lanes(service):
    """Every ``((queue, -priority), JobQueue)``, by queue then priority
    from the highest."""
    routing = state(service)
    if routing is None:
        return [((DEFAULT_QUEUE, 0), service._queue)]
    return list(routing.lanes.items())


# -- Job life cycle hooks (called by the service) -------------------------------

def entered(service, job, old, new):
    """A job went from status ``old`` to ``new``: a processing job's end
    frees its concurrency slot.  (Nothing else is written: a count per
    queue of processing jobs would be one object every claim and every
    end in that queue writes; ``queues()`` counts them from the
    processing index instead.)"""
    if old == PROCESSING and old != new:
        slot = getattr(job, '_slot', None)
        if slot is not None:
            job._slot = None
            _release(service, job, slot)


def forgotten(service, job):
    """A job is being removed: drop its unique key's record."""
    key = getattr(job, 'unique_key', None)
    routing = state(service)
    if key is not None and routing is not None \
            and routing.unique.get(key) == job.id:
        del routing.unique[key]


#: Statuses in which a job holds its unique key.
HOLDING = (QUEUED, DELAYED, STARTLATER, PROCESSING, CRONJOB, DEFERRED)


def existing(service, key):
    """The id of the job holding unique ``key`` (waiting, start later or
    processing), or None."""
    routing = state(service)
    if routing is None:
        return None
    jobid = routing.unique.get(key)
    if jobid is None:
        return None
    job = service.jobs.get(jobid)
    if job is None or job._status not in HOLDING:
        return None
    return jobid


def holdKey(service, key, jobid):
    """Record ``jobid`` as the holder of unique ``key``.  Written even if
    the same id is there: two concurrent adds of one key must conflict."""
    state(service, create=True).unique[key] = jobid


# -- Claims ---------------------------------------------------------------------

def claimOrder(service, queues, spread, load=None):
    """The lanes a claim visits, in order: an iterator of ``(queue,
    lane)``, lazily, so that a claim that finds its jobs in the first lanes
    looks at no other (a lane's emptiness costs a read of its counters).

    With ``queues`` (a worker's list): the first queue's lanes from its
    highest priority down, then the next queue's...  Without: every queue,
    by priority from the highest; lanes of one priority in an order drawn
    at random for a spread claim (so workers share the queues), else
    ordered by their earliest due entry.  Lanes without entries are
    skipped.  ``load``: a ``structures.prefetcher``, to load the lanes in
    one round.
    """
    routing = state(service)
    paused = _pausedQueues(routing)
    if paused is True:
        return
    if routing is None:
        yield DEFAULT_QUEUE, service._queue
        return
    if load is not None and len(routing.lanes) > 1:
        load(list(routing.lanes.values()))
    if queues is not None:
        for queue in queues:
            if queue in paused:
                continue
            group = list(routing.lanes.items(
                min=(queue, -MAX_PRIORITY - 1),
                max=(queue, -MIN_PRIORITY + 1)))
            _loadCounters(load, group)
            for (q, negp), found in group:
                if hasEntries(found):
                    yield q, found
        return
    byPriority = {}
    for (q, negp), found in routing.lanes.items():
        if q not in paused:
            byPriority.setdefault(negp, []).append((q, found))
    for negp in sorted(byPriority):
        group = byPriority[negp]
        _loadCounters(load, group)
        if len(group) > 1:
            if spread:
                _rng.shuffle(group)
            else:
                group = [item for item in group if hasEntries(item[1])]
                group.sort(key=lambda item: item[1].oldest() or (math.inf,))
        for q, found in group:
            if hasEntries(found):
                yield q, found


def _loadCounters(load, group):
    """Load the counters of a group of lanes (``[(key, lane)]``) in one
    round (over ZEO or RelStorage; ``load`` None: nothing to gain)."""
    if load is not None and len(group) > 1:
        load([counter for key, lane_ in group
              for counter in _countersOf(lane_)])


def _countersOf(lane_):
    """A lane's counters (none for a lane without)."""
    return getattr(lane_, 'counters', tuple)()


def loadedCounters(service):
    """The counters of the service's lanes that are in memory (nothing
    is loaded to find them): what the next claim of this connection loads
    ahead in its first round (``TaskService.claim``), since every claim
    of every worker changes them; otherwise ``hasEntries`` loads them one
    after the other, each a round trip over ZEO or RelStorage."""
    routing = state(service)
    if routing is None:
        found = [service._queue]
    elif routing._p_changed is None or routing.lanes._p_changed is None:
        return ()
    else:
        found = list(routing.lanes.values())
    return tuple(counter for lane_ in found if lane_._p_changed is not None
                 for counter in _countersOf(lane_))


def hasEntries(lane_):
    """True if the lane (a JobQueue) has entries: its counters read until
    one is not zero (rather than all of them summed)."""
    counters = getattr(lane_, 'counters', None)
    if counters is None:
        return len(lane_) > 0
    return any(counter() for counter in counters())


def _pausedQueues(routing):
    """True if everything is paused, else the set of paused queues."""
    if routing is None or not len(routing.pauses):
        return set()
    if ('', '') in routing.pauses:
        return True
    return {q for q, t in routing.pauses.keys() if q and not t}


class Gate:
    """What a claim may take: checked job by job, in the claim's
    transaction.  ``admit(job, queue)`` returns True and takes the job's
    concurrency slot and rate budget, or False (the job stays queued)."""

    def __init__(self, service, now, tasks=None):
        self.service = service
        self.now = now
        self.tasks = tasks
        routing = state(service)
        self.pauses = {} if routing is None else {
            key: True for key in routing.pauses.keys() if key[1]}
        self.blocked = set()    # tasks held back for the rest of the claim
        self.held = 0           # jobs left in the queue by admit()
        self._limits = {}

    def _limitsOf(self, name):
        found = self._limits.get(name)
        if found is None:
            task = self.service._getTask(name)
            found = self._limits[name] = (
                _taskConcurrency(task), _taskRate(task))
        return found

    def admit(self, job, queue):
        name = job.task
        if name in self.blocked or (
                self.tasks is not None and name not in self.tasks) or (
                self.pauses and ((('', name) in self.pauses)
                                 or (queue, name) in self.pauses)):
            self.held += 1
            return False
        concurrency, rate = self._limitsOf(name)
        if concurrency is None and rate is None:
            return True
        if rate is not None and not _hasBudget(self.service, name, rate,
                                               self.now):
            self.blocked.add(name)
            self.held += 1
            return False
        if concurrency is not None:
            slot = _takeSlot(self.service, name, concurrency, job)
            if slot is None:
                self.blocked.add(name)
                self.held += 1
                return False
            job._slot = slot
        if rate is not None:
            _spend(self.service, name, rate, self.now)
        return True


def _taskConcurrency(task):
    value = getattr(task, 'concurrency', None)
    try:
        return checkConcurrency(value)
    except InvalidInputError:
        return 1        # set by hand to something odd: the safe reading


def _taskRate(task):
    value = getattr(task, 'rate_limit', None)
    try:
        return parseRate(value)
    except InvalidInputError:
        return None


def _slotsOf(service, name, n):
    routing = state(service, create=True)
    found = routing.slots.get(name)
    if found is None:
        found = routing.slots[name] = _Slots()
    if len(found.slots) < n:
        found.slots = found.slots + tuple(
            _Slot() for _ in range(n - len(found.slots)))
    return found.slots


def _holds(service, slot, index):
    jobid = slot.jobid
    if jobid is None:
        return False
    job = service.jobs.get(jobid)
    return (job is not None and job._status == PROCESSING
            and getattr(job, '_slot', None) == index)


def _takeSlot(service, name, n, job):
    """Take a free slot of the first ``n`` of task ``name`` for ``job``
    (written: a concurrent claim of the same slot conflicts); its index,
    or None if all are held."""
    slots = _slotsOf(service, name, n)[:n]
    free = [i for i, slot in enumerate(slots)
            if not _holds(service, slot, i)]
    if not free:
        return None
    index = _rng.choice(free)
    slots[index].jobid = job.id
    return index


def _release(service, job, index):
    routing = state(service)
    found = None if routing is None else routing.slots.get(job.task)
    if found is None or index >= len(found.slots):
        return
    slot = found.slots[index]
    if slot.jobid == job.id:
        slot.jobid = None


def _rateOf(service, name):
    routing = state(service, create=True)
    found = routing.rates.get(name)
    if found is None:
        found = routing.rates[name] = _Rate()
    return found


def _hasBudget(service, name, rate, now):
    n, period = rate
    routing = state(service)
    found = None if routing is None else routing.rates.get(name)
    if found is None:
        return True
    starts = found.starts[-n:]
    return len(starts) < n or starts[0] <= now - period


def _spend(service, name, rate, now):
    n, period = rate
    found = _rateOf(service, name)
    found.starts = (found.starts + (now,))[-n:]


def nextStart(service, name, now):
    """When a rate-limited task may start again (epoch), or None."""
    rate = _taskRate(service._getTask(name))
    if rate is None:
        return None
    n, period = rate
    routing = state(service)
    found = None if routing is None else routing.rates.get(name)
    if found is None or len(found.starts[-n:]) < n:
        return now
    return max(now, found.starts[-n:][0] + period)


# -- Pauses ------------------------------------------------------------------

def pause(service, queue=None, task=None, now=None):
    queue, task = checkFilter(queue, task)
    routing = state(service, create=True)
    key = (queue or '', task or '')
    if key not in routing.pauses:
        routing.pauses[key] = now
        return True
    return False


def resume(service, queue=None, task=None):
    """Remove the pauses that match (None matches any); return how many."""
    queue, task = checkFilter(queue, task)
    routing = state(service)
    if routing is None:
        return 0
    matching = [key for key in routing.pauses.keys()
                if (queue is None or key[0] == queue)
                and (task is None or key[1] == task)]
    for key in matching:
        del routing.pauses[key]
    return len(matching)


def paused(service):
    routing = state(service)
    if routing is None:
        return []
    return [{'queue': q or None, 'task': t or None, 'since': since}
            for (q, t), since in routing.pauses.items()]


def isPaused(service, queue, task):
    routing = state(service)
    if routing is None or not len(routing.pauses):
        return False
    return any(key in routing.pauses for key in
               (('', ''), (queue, ''), ('', task), (queue, task)))


# -- Reading -------------------------------------------------------------------

def entries(service):
    """Every waiting ``(eta, jobid)``, in due order across lanes."""
    return heapq.merge(*[iter(found) for key, found in lanes(service)])


def oldest(service, queue=None):
    firsts = [found.oldest() for (q, negp), found in lanes(service)
              if (queue is None or q == queue) and len(found)]
    firsts = [f for f in firsts if f is not None]
    return min(firsts) if firsts else None


def hasDue(service, now):
    routing = state(service)
    if routing is None:
        return service._queue.hasDue(now)
    paused = _pausedQueues(routing)
    if paused is True:
        return False
    return any(hasEntries(found) and found.hasDue(now)
               for (q, negp), found in routing.lanes.items()
               if q not in paused)


def firstEta(service):
    """The earliest time a waiting job of any lane is due at (paused or
    not, whatever its task's limits), or None if no job waits."""
    firsts = [first[0] for key, found in lanes(service)
              for first in (found.oldest(),) if first is not None]
    return min(firsts) if firsts else None


def queueNames(service):
    """The names of the queues that had jobs (and 'default')."""
    names = {DEFAULT_QUEUE}
    names.update(q for (q, negp), found in lanes(service))
    return sorted(names)


def queues(service, now, limit=10000):
    """Per queue: waiting (queued, delayed and cron jobs), processing,
    paused, the age of its oldest due job, its priorities in use."""
    routing = state(service)
    found = {}
    for (q, negp), lane_ in lanes(service):
        info = found.setdefault(q, {'queue': q, 'waiting': 0,
                                    'processing': 0, 'priorities': [],
                                    'oldest_due': None})
        n = len(lane_)
        info['waiting'] += n
        if n:
            info['priorities'].append(-negp)
            first = lane_.oldest()
            if first is not None and (info['oldest_due'] is None
                                      or first[0] < info['oldest_due']):
                info['oldest_due'] = first[0]
    found.setdefault(DEFAULT_QUEUE, {
        'queue': DEFAULT_QUEUE, 'waiting': 0, 'processing': 0,
        'priorities': [], 'oldest_due': None})
    # Processing jobs by queue, from the processing index (as many as
    # there are claimed jobs: workers x threads x claim size); beyond
    # ``limit`` of them, the rest count for 'default'.
    processing = service.count(PROCESSING)
    counted = 0
    if routing is not None and len(routing.lanes) > 1:
        for jobid in service.jobIds(PROCESSING):
            if counted >= limit:
                break
            job = service.jobs.get(jobid)
            q = DEFAULT_QUEUE if job is None else jobQueue(job)
            if q != DEFAULT_QUEUE:
                found.setdefault(q, {'queue': q, 'waiting': 0,
                                     'processing': 0, 'priorities': [],
                                     'oldest_due': None})
                found[q]['processing'] += 1
                counted += 1
    found[DEFAULT_QUEUE]['processing'] = max(0, processing - counted)
    pausedQueues = _pausedQueues(routing)
    result = []
    for q in sorted(found):
        info = found[q]
        due = info['oldest_due']
        info['oldest_age'] = (None if due is None or due > now
                              else now - due)
        info['paused'] = pausedQueues is True or q in pausedQueues
        result.append(info)
    return result


def pausedCount(service, limit=100000):
    """How many waiting jobs pauses hold back (queue pauses: their
    queues' waiting jobs; task pauses: counted job by job, up to
    ``limit`` jobs looked at)."""
    routing = state(service)
    if routing is None or not len(routing.pauses):
        return 0
    if ('', '') in routing.pauses:
        return sum(len(found) for key, found in lanes(service))
    pausedQueues = _pausedQueues(routing)
    total = sum(len(found) for (q, negp), found in lanes(service)
                if q in pausedQueues)
    taskPauses = [(q, t) for q, t in routing.pauses.keys() if t]
    if not taskPauses:
        return total
    looked = 0
    for t in {t for q, t in taskPauses}:
        for status in WAITING_STATUSES:
            for jobid in service.jobIds(status, task=t):
                looked += 1
                if looked > limit:
                    return total
                job = service.jobs[jobid]
                q = jobQueue(job)
                if q in pausedQueues:
                    continue
                if ('', t) in routing.pauses or (q, t) in routing.pauses:
                    total += 1
    return total


# -- Bulk actions --------------------------------------------------------------

# They live in ``remotetask.bulk`` (bounded steps with a cursor); these
# names stay for callers of this module.

def retryAll(service, queue=None, task=None, now=None, dry_run=False,
             limit=None):
    from remotetask import bulk
    return bulk.retryAll(service, queue, task, now, dry_run, limit)


def purge(service, queue=None, task=None, dry_run=False, limit=None):
    from remotetask import bulk
    return bulk.purge(service, queue, task, dry_run, limit)


def deleteJobs(service, status=None, queue=None, task=None, before=None,
               dry_run=False, limit=None):
    from remotetask import bulk
    return bulk.deleteJobs(service, status, queue, task, before, dry_run,
                           limit)


#: Bulk actions by name.
BULK = {'retry': retryAll, 'purge': purge, 'delete': deleteJobs}

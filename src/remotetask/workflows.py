"""Workflows: jobs that wait for other jobs (``after=``), chains and groups.

The service delegates here (``TaskService.add(after=...)``, ``chain()``,
``group()``, and one call when a job that others wait for changes status
or is deleted).  ``docs/workflows.md`` is the design note; the rules, in
short:

- A job added ``after=(a, b, ...)`` (its *parents*) is ``deferred`` until
  they all completed; the transaction that completes the last of them also
  queues it.  A parent that completed already counts as done.
- A parent that ends ``error`` or ``cancelled``, or is deleted, cancels the
  deferred jobs waiting for it, with an error naming it; and so on down the
  graph (each cancelled job cancels its own children).
- ``retry()`` of such a parent makes the jobs it cancelled wait again
  (``deferred``), down the graph; they run once it completes.  A job
  cancelled by hand stays cancelled.  ``retry()`` of a job whose parent
  failed is refused (retry the parent); of a job whose parents are not all
  done, it goes back to ``deferred``.
- ``clean()`` (and retention) keeps a job that a job not yet final was
  added after: ``awaited()``.

The structures, and why they are exactly-once:

- a parent keeps its children's ids in ``job._links``: a tuple on the job
  itself while there are up to ``INLINE``, a ``_Links`` beyond; a job
  without children has none, and its completion reads and writes nothing
  more than before;
- a deferred job keeps how many parents it still waits for in a
  ``Countdown`` (in shards for many parents: ``ShardedCountdown``), a
  ``BTrees.Length`` whose conflict resolution adds up
  concurrent changes (so the completions of a large group, committed by
  several workers at once, do not conflict over it) *except* when the sum
  would reach zero: then the later commit conflicts, runs again, and sees
  that it completes the last parent.  So exactly one transaction brings it
  to zero, and it is the one that releases the job;
- adding a child and completing (or failing, or retrying, or deleting) its
  parent must not miss each other: the add writes the parent job (its
  tuple of children), which the parent's end writes too; beyond
  ``INLINE`` children it writes the parent's ``_Links`` and marks the
  parent "read current", and the parent's end marks its ``_Links`` "read
  current" (``Connection.readCurrent``).  Whichever commits second
  conflicts and runs again, seeing the other.  The same holds between a
  parent's end and a child being cancelled or revived meanwhile.
"""
import collections
import logging
import threading
import time

import persistent
from BTrees.Length import Length
from BTrees.LOBTree import LOTreeSet
from ZODB.POSException import ConflictError
from ZODB.utils import z64

from remotetask import events
from remotetask.interfaces import (
    CANCELLED, COMPLETED, DEFERRED, ERROR, FINAL_STATUSES, InvalidInputError,
    InvalidStatusError, JobNotFoundError, UnknownTaskError)

log = logging.getLogger('remotetask')

#: How many children a ``_Links`` keeps in a tuple before a tree set.
INLINE = 32
#: How many ids ``describe()`` lists (it gives the totals too).
LIST_LIMIT = 100
#: How many parents ``describe()`` looks at to say which are not done.
SCAN_LIMIT = 200
#: An error text names a failed parent's error up to this many characters.
REASON_LIMIT = 300

#: The input of a step whose input was None: the previous step's result
#: (chain) or the list of the parents' results (a group's ``then``).
PREVIOUS = 'previous'
RESULTS = 'results'


class Countdown(Length):
    """How many parents a deferred job still waits for.

    Like ``BTrees.Length``, concurrent changes are added up, so that the
    completions of a group's jobs never conflict over it; unless the sum
    reaches zero (or less): the transaction that makes it zero must have
    seen every other decrement, or two concurrent last completions would
    each see one left and nobody would release the job.  That commit
    conflicts instead, and runs again.
    """

    def _p_resolveConflict(self, old, committed, new):
        merged = committed + new - old
        if merged <= 0:
            raise ConflictError('two transactions complete the last parents '
                                'of a deferred job')
        return merged


    def done(self, parentId):
        """A parent completed: True if it was the last one."""
        self.change(-1)
        return self.value <= 0


#: A job waiting for this many parents or more counts them in shards.
SHARD_FROM = 64


class ShardedCountdown(persistent.Persistent):
    """The parents a deferred job waits for, counted in one ``Countdown``
    per queue partition of theirs, and a ``Countdown`` of the shards not
    yet at zero.

    A worker claims from one queue partition at a time (and moves when
    it meets another there), so concurrent commits of a large group's jobs
    mostly decrement different shards: no conflict for the storage to
    resolve at all.  Each shard reaches zero in exactly one transaction
    (``Countdown``), which decrements ``left``; ``left`` reaches zero in
    exactly one transaction, which releases the job.  Written only when
    made: the shards are objects of their own.
    """

    def __init__(self, parentIds):
        from remotetask.structures import PARTITIONS, SPREAD, STRIPE
        # The partition function of the queue (structures), kept with the
        # counts so that a later change of its constants can not mismatch.
        self.stripe, self.lanes, self.spread = STRIPE, PARTITIONS, SPREAD
        counts = {}
        for jobid in parentIds:
            key = self.key(jobid)
            counts[key] = counts.get(key, 0) + 1
        self.shards = {key: Countdown(n) for key, n in counts.items()}
        self.left = Countdown(len(self.shards))

    def key(self, jobid):
        return ((jobid // self.stripe) % self.lanes) * self.spread \
            + jobid % self.spread

    def done(self, parentId):
        """A parent completed: True if it was the last one."""
        shard = self.shards.get(self.key(parentId))
        if shard is None:       # not one it waited for: never expected
            log.error('job %s completed, but a countdown does not count it;'
                      ' ignored', parentId)
            return False
        shard.change(-1)
        if shard.value > 0:
            return False
        self.left.change(-1)
        return self.left.value <= 0

    def __call__(self):
        return sum(shard() for shard in self.shards.values())


def _countdown(pending):
    """What counts the ``pending`` parents (jobs) of a deferred job."""
    if len(pending) >= SHARD_FROM:
        return ShardedCountdown([p.id for p in pending])
    return Countdown(len(pending))


class _Links(persistent.Persistent):
    """The ids of the jobs added after one job (its children).

    A tuple while small (one object, written with each added child), a
    tree set beyond ``INLINE`` ids (an add writes one bucket, and this
    object's counter, so that a concurrent end of the parent, which marks
    this object read-current, conflicts with it).
    """

    _ids = ()
    _adds = 0

    def add(self, childid):
        ids = self._ids
        if isinstance(ids, tuple):
            if childid in ids:
                return
            if len(ids) < INLINE:
                self._ids = ids + (childid,)
                return
            self._ids = ids = LOTreeSet(ids)
        if ids.insert(childid):
            self._adds += 1

    def __iter__(self):
        return iter(self._ids)

    def __len__(self):
        return len(self._ids)

    def first(self, n):
        found = []
        for childid in self._ids:
            if len(found) >= n:
                break
            found.append(childid)
        return found


def _readCurrent(ob):
    """Make the commit conflict if ``ob`` was changed by a transaction that
    committed since this one read it (a no-op for objects not stored yet,
    or changed in this transaction: their store checks that)."""
    jar = ob._p_jar
    if jar is None or ob._p_oid is None:
        return
    ob._p_activate()
    if ob._p_changed or ob._p_serial in (None, z64):
        return
    jar.readCurrent(ob)


# -- Adding -------------------------------------------------------------------

def _ids(after):
    """``after`` as a tuple of distinct job ids, in order."""
    if isinstance(after, int) and not isinstance(after, bool):
        after = (after,)
    if isinstance(after, (str, bytes, dict)) or not hasattr(after,
                                                            '__iter__'):
        raise InvalidInputError('after must be a job id or a sequence of job '
                                'ids, not %r' % (after,))
    ids = []
    for jobid in after:
        if isinstance(jobid, bool) or not isinstance(jobid, int):
            raise InvalidInputError('after must hold job ids (integers), not '
                                    '%r' % (jobid,))
        if jobid not in ids:
            ids.append(jobid)
    return tuple(ids)


def parents(service, after, startLater=False, delay=None, eta=None):
    """The parent jobs named by ``after``, checked (for ``add()``: before
    anything is stored)."""
    ids = _ids(after)
    if ids and (startLater or delay is not None or eta is not None):
        raise InvalidInputError('after can not be combined with startLater, '
                                'delay or eta: a deferred job is queued when '
                                'its parents completed')
    found = []
    for jobid in ids:
        job = service.jobs.get(jobid)
        if job is None:
            raise InvalidInputError(
                'after: no job with id %r (a job can only wait for jobs '
                'that exist)' % (jobid,))
        if _isCron(job):
            raise InvalidInputError('after: job %s is a cron job, which '
                                    'never completes' % jobid)
        found.append(job)
    return found


def _isCron(job):
    from remotetask.job import CronJob
    return isinstance(job, CronJob)


def _link(parent, childid):
    """Record a child on its parent: in a tuple on the parent job itself
    while there are few (adding one writes the parent, which its end writes
    too: they can not miss each other), in a ``_Links`` beyond (adding one
    writes that, and marks the parent read-current; the parent's end marks
    the ``_Links`` read-current)."""
    links = parent._links
    if links is None or isinstance(links, tuple):
        links = links or ()
        if childid in links:
            return
        if len(links) < INLINE:
            parent._links = links + (childid,)
            return
        parent._links = big = _Links()
        for known in links:
            big.add(known)
        links = big
    else:
        _readCurrent(parent)
    links.add(childid)


def _ids_of(links):
    """The child ids in a job's ``_links`` (None, a tuple or a _Links)."""
    if links is None:
        return ()
    return links if isinstance(links, tuple) else list(links)


def _current(links):
    # A tuple lives in the parent job, which every end of it writes.
    if not isinstance(links, tuple):
        _readCurrent(links)


def defer(service, job, parentJobs, now):
    """Enter a job just stored (by ``add()``) with its parents: deferred,
    queued if they all completed, cancelled if one failed."""
    job._after = tuple(p.id for p in parentJobs)
    for parent in parentJobs:
        _link(parent, job.id)
    failed = [p for p in parentJobs if p._status in (ERROR, CANCELLED)]
    pending = [p for p in parentJobs if p._status != COMPLETED]
    _persistIndex(service)
    if failed:
        job.error = _reason(failed[0])
        job._cancelledBy = failed[0].id
        service._enter(job, CANCELLED)
        events.notify(events.JobCancelled(job, service))
    elif pending:
        job._countdown = _countdown(pending)
        service._enter(job, DEFERRED)
    else:
        service._enter(job, DEFERRED)
        _release(service, job, now)


def _persistIndex(service):
    # A service stored before the status existed got an empty index in
    # memory (TaskService.__setstate__): store it with the service.
    index = service._index[DEFERRED]
    if index._p_jar is None and service._p_jar is not None:
        service._p_changed = True


def _steps(service, steps, what):
    """``steps`` checked: a list of ``(task, input)`` pairs."""
    if isinstance(steps, (str, bytes, dict)) or not hasattr(steps,
                                                            '__iter__'):
        raise InvalidInputError('the steps of a %s must be a sequence of '
                                '(task, input) pairs, not %r' % (what, steps))
    steps = list(steps)
    if not steps:
        raise InvalidInputError('a %s needs at least one step' % what)
    checked = []
    for n, step in enumerate(steps, 1):
        checked.append(_step(service, step, 'step %d of the %s' % (n, what)))
    return checked


def _step(service, step, name):
    from remotetask.service import checkPicklable
    if not isinstance(step, (tuple, list)) or len(step) != 2:
        raise InvalidInputError('%s is not a (task, input) pair: %r'
                                % (name, step))
    task, input = step
    try:
        service._checkTask(task)
        checkPicklable(input, 'input of %s' % name)
    except UnknownTaskError as e:
        raise UnknownTaskError('%s: %s' % (name, e)) from None
    return task, input


def chain(service, steps, after, now):
    """See ITaskService.chain."""
    steps = _steps(service, steps, 'chain')
    previous = parents(service, after) if after is not None else []
    ids = []
    for n, (task, input) in enumerate(steps):
        jobid = service.add(task, input, now=now,
                            after=[p.id for p in previous] or None)
        job = service.jobs[jobid]
        if n and input is None:
            _feedFrom(service, job, PREVIOUS)
        ids.append(jobid)
        previous = [job]
    return ids


def group(service, steps, then, after, now):
    """See ITaskService.group."""
    steps = _steps(service, steps, 'group')
    if then is not None:
        then = _step(service, then, 'the then of the group')
    if after is not None:
        parents(service, after)
    ids = [service.add(task, input, now=now, after=after)
           for task, input in steps]
    thenId = None
    if then is not None:
        task, input = then
        thenId = service.add(task, input, now=now, after=ids)
        if input is None:
            _feedFrom(service, service.jobs[thenId], RESULTS)
    return ids, thenId


def _feedFrom(service, job, mode):
    job._inputFrom = mode
    if job._status not in (DEFERRED, CANCELLED):
        _feed(service, job)      # released at once: its parents are done


# -- Parents' ends ------------------------------------------------------------

_state = threading.local()


def transitioned(service, job, old):
    """``job``, which has children, went from status ``old`` to its
    current one (called by ``TaskService._transition``)."""
    _run(service, job, old, False)


def forgotten(service, job):
    """``job``, which has children, is being deleted."""
    _run(service, job, job._status, True)


def deleting(service, job):
    """``job`` (any) is about to be deleted by hand.  A child added to it
    concurrently writes it (or its ``_Links``, which the deletion of a job
    with children marks read-current): so that the two conflict, a job
    that is not final is written by its deletion too."""
    if job._status not in FINAL_STATUSES:
        job._p_changed = True


def _run(service, job, old, deleted):
    # Cancelling or reviving a child changes its status, which calls back
    # here for its own children: a work list, not a recursion, so that a
    # chain of any length is handled.
    pending = getattr(_state, 'pending', None)
    if pending is not None:
        pending.append((service, job, old, deleted))
        return
    _state.pending = pending = collections.deque(
        [(service, job, old, deleted)])
    try:
        while pending:
            _settle(*pending.popleft())
    finally:
        _state.pending = None


def _settle(service, job, old, deleted):
    links = job._links
    new = job._status
    failed = (ERROR, CANCELLED)
    if deleted:
        _current(links)
        _cancelChildren(service, job, links, 'was deleted')
    elif new == COMPLETED:
        _current(links)
        when = job.completed if job.completed is not None else time.time()
        for child in _children(service, links):
            _parentDone(service, child, job.id, when)
    elif new in failed and old not in failed:
        _current(links)
        _cancelChildren(service, job, links, None)
    elif old in failed and new not in FINAL_STATUSES:
        _current(links)
        for child in _children(service, links):
            if child._status == CANCELLED and child._cancelledBy == job.id:
                _reconsider(service, child, time.time(), revive=True)
            else:
                _readCurrent(child)


def _children(service, links):
    for childid in list(_ids_of(links)):
        child = service.jobs.get(childid)
        if child is not None:      # deleted children stay listed
            yield child


def _parentDone(service, child, parentId, now):
    if child._status != DEFERRED or child._countdown is None:
        _readCurrent(child)        # a concurrent retry would revive it
        return
    if child._countdown.done(parentId):
        _release(service, child, now)


def _release(service, job, now):
    # Due since it was added (it waited for its parents, not for a time):
    # ahead of jobs added after it, and due within a ``process(now)`` that
    # completes its parents.
    job._countdown = None
    _feed(service, job)
    created = job.created if job.created is not None else now
    service._wait(job, min(now, created), now)


def _feed(service, job):
    if job._inputFrom == PREVIOUS:
        job.input = _parentJobs(service, job)[0].output
    elif job._inputFrom == RESULTS:
        job.input = [p.output for p in _parentJobs(service, job)]


def _parentJobs(service, job):
    ids = list(job._after)
    _prefetch(service, ids)
    found = []
    for jobid in ids:
        parent = service.jobs.get(jobid)
        if parent is None:
            raise JobNotFoundError('job %s, a parent of job %s, was deleted'
                                   % (jobid, job.id))
        found.append(parent)
    return found


def _prefetch(service, ids, chunk=2000):
    """Load many jobs over ZEO/RelStorage in a few round trips (as a
    claim does: the trees that hold them, their buckets, the jobs)."""
    from remotetask.structures import leaves, prefetcher, roots
    load = prefetcher(service._p_jar)
    if load is None or len(ids) < 16:
        return

    def warm(objects):
        load(objects)
        for ob in objects:
            if ob is not None:
                ob._p_activate()
    for start in range(0, len(ids), chunk):
        part = ids[start:start + chunk]
        warm(roots(service.jobs, part))
        warm(leaves(service.jobs, part))
        warm([service.jobs.get(jobid) for jobid in part])


def _reason(parent, how=None):
    """The error of a job cancelled because of ``parent``.  Down the graph
    each names its own parent and the first cause, not every step."""
    if how is None:
        if parent._status == ERROR:
            error = (parent.error or '').strip().splitlines()
            error = error[-1] if error else ''
            if len(error) > REASON_LIMIT:
                error = error[:REASON_LIMIT] + '...'
            how = 'ended in error' + (': ' + error if error else '')
        else:
            how = 'was cancelled'
            cause = _cause(parent)
            if cause:
                how += CAUSE + cause
    return PREFIX + 'parent job %s %s' % (parent.id, how)


PREFIX = 'cancelled: '
CAUSE = '; first cause: '


def _cause(job):
    """The first cause a job cancelled because of a parent names (None for
    a job cancelled by hand)."""
    error = job.error or ''
    if job._cancelledBy is None or not error.startswith(PREFIX):
        return None
    return error.rsplit(CAUSE, 1)[-1] if CAUSE in error \
        else error[len(PREFIX):]


def _cancelChildren(service, parent, links, how):
    reason = _reason(parent, how)
    for child in _children(service, links):
        if child._status != DEFERRED:
            _readCurrent(child)
            continue
        child.error = reason
        child._cancelledBy = parent.id
        child._countdown = None
        service._transition(child, CANCELLED)
        events.notify(events.JobCancelled(child, service))


def _reconsider(service, job, now, revive):
    """Put ``job`` (cancelled or ended error, with parents) back: deferred
    if some parents have not completed, queued if all have.  ``revive``:
    a parent was retried (the job stays cancelled, naming the parent, if
    another one failed); otherwise a user asked for a retry (refused then).
    """
    parentJobs = []
    for jobid in job._after:
        parent = service.jobs.get(jobid)
        if parent is None:
            if revive:
                job.error = 'cancelled: parent job %s was deleted' % jobid
                job._cancelledBy = jobid
                return False
            raise InvalidStatusError(
                'can not retry job %s: its parent job %s was deleted (add a '
                'new job instead)' % (job.id, jobid))
        parentJobs.append(parent)
    for parent in parentJobs:
        if parent._status in (ERROR, CANCELLED):
            if revive:
                job.error = _reason(parent)
                job._cancelledBy = parent.id
                return False
            raise InvalidStatusError(
                'can not retry job %s: its parent job %s is %r; retry job %s '
                '(the jobs it cancelled then wait for it again)'
                % (job.id, parent.id, parent._status, parent.id))
    pending = [p for p in parentJobs if p._status != COMPLETED]
    for parent in parentJobs:
        _readCurrent(parent)       # their end must not pass us by
    job.error = None
    job.traceback = None
    job._cancelledBy = None
    if pending:
        job._countdown = _countdown(pending)
        service._transition(job, DEFERRED)
    else:
        service._transition(job, DEFERRED)
        _release(service, job, now)
    return True


def retry(service, job, now):
    """``TaskService.retry()`` of a job with parents (see the module)."""
    _reconsider(service, job, now, revive=False)


# -- Reading ------------------------------------------------------------------

def awaited(service, job):
    """True if a job that is not final yet was added after ``job``: its
    result may still be read (``parentResults()``, a chain's input), so
    ``clean()`` and retention must keep it.  O(children)."""
    links = job._links
    if links is None:
        return False
    for child in _children(service, links):
        if child._status not in FINAL_STATUSES:
            return True
    return False


def parentResults(service, job):
    """See ITaskContext.parentResults."""
    return [p.output for p in _parentJobs(service, job)]


def childIds(job, limit=None):
    """The ids of the jobs added after ``job`` (the first ``limit``)."""
    links = job._links
    if links is None:
        return []
    if isinstance(links, tuple):
        return list(links if limit is None else links[:limit])
    return list(links) if limit is None else links.first(limit)


def describe(service, job, limit=LIST_LIMIT):
    """What the web service and the command line show of a job's place in
    a workflow: its parents and children (the first ``limit`` ids of each,
    and how many there are), and, for a deferred job, how many parents it
    still waits for and which (among the first ``SCAN_LIMIT``)."""
    after = job._after
    links = job._links
    info = {'parents': list(after[:limit]), 'parents_total': len(after),
            'children': childIds(job, limit),
            'children_total': 0 if links is None else len(links),
            'waiting_for': None, 'waiting_on': []}
    if job._status == DEFERRED and job._countdown is not None:
        info['waiting_for'] = job._countdown()
        for jobid in after[:SCAN_LIMIT]:
            parent = service.jobs.get(jobid)
            if parent is not None and parent._status != COMPLETED:
                info['waiting_on'].append(jobid)
                if len(info['waiting_on']) >= 10:
                    break
    return info


def check(service):
    """Problems in the workflow bookkeeping, as a list of strings (for
    tests): every deferred job waits for exactly its parents that did not
    complete, none of which failed; every parent lists its children."""
    problems = []
    for jobid, job in service.jobs.items():
        for parentid in job._after:
            parent = service.jobs.get(parentid)
            if parent is not None and jobid not in childIds(parent):
                problems.append('job %s does not list its child %s'
                                % (parentid, jobid))
        if job._status != DEFERRED:
            continue
        found = [service.jobs.get(p) for p in job._after]
        notDone = [p for p in found if p is None or p._status != COMPLETED]
        if any(p is None or p._status in (ERROR, CANCELLED) for p in found):
            problems.append('deferred job %s has a failed or deleted parent'
                            % jobid)
        if job._countdown is None or job._countdown() != len(notDone):
            problems.append('deferred job %s waits for %s parents, %d are '
                            'not done' % (jobid, job._countdown and
                                          job._countdown(), len(notDone)))
    return problems

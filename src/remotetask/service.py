"""The task service.  See ``interfaces.ITaskService``."""
import logging
import pickle
import time
import traceback as tb_module

import persistent
import transaction
import zope.component
import zope.interface
from BTrees.LOBTree import LOBTree
from BTrees.OOBTree import OOBTree
from transaction.interfaces import TransientError

from remotetask import (bulk, events, interfaces, limits, pgnotify, registry,
                        retention, routing, scheduling, stats, workflows)
from remotetask.interfaces import (
    CANCELLED, COMPLETED, CRONJOB, DEFERRED, DELAYED, ERROR, FINAL_STATUSES,
    PROCESSING, QUEUED, STARTLATER, STATUSES, WAITING_STATUSES, InvalidInputError,
    InvalidStatusError, JobNotFoundError, Retry, TaskError, TimeLimitExceeded,
    LeaseLost, UnknownTaskError)
from remotetask.job import (CronJob, Job, TaskContext, _Run,
                            running)
from remotetask.numbers import checkNumber as _number
from remotetask.structures import (
    PARTITIONS, SENTINEL, SPREAD, Counts, IdAllocator, IdIndex, IdSet,
    IdSetView, JobQueue, JobTree, WaitingIndex, claimPartition, firstLeaf,
    home, intersect, keepPartition, leaves, partitionOf, prefetcher, roots)
from remotetask.task import policy, retryDelay

log = logging.getLogger('remotetask')


#: How many due jobs a claim looks past, per lane, when the jobs it meets
#: are held back: of other ``tasks``, paused, or at their task's
#: concurrency or rate limit (see ITaskService.claim).
SCAN_PAST = routing.SCAN_PAST


def _now(now):
    return time.time() if now is None else now


class _ProbePickler(pickle.Pickler):
    """Pickles like ZODB does: persistent objects are references.  Strings
    must be encodable as UTF-8: one with a lone surrogate (``'\\ud800'``)
    pickles, but no XML-RPC or JSON client could ever read it back."""

    def persistent_id(self, obj):
        if isinstance(obj, str):
            if not obj.isascii():
                obj.encode('utf-8')     # UnicodeEncodeError
            return None
        if isinstance(obj, persistent.Persistent):
            return id(obj)
        return None


class _Sink:
    def write(self, data):
        pass


#: Inputs that always pickle (strings are checked for UTF-8 apart).
_PLAIN = frozenset((int, float, bool, type(None), bytes))


def checkPicklable(value, what='input'):
    """Raise InvalidInputError if ``value`` can not be stored in the ZODB."""
    kind = type(value)
    if kind in _PLAIN or kind is str and value.isascii():
        return      # nothing to find: no pickling for the common inputs
    try:
        _ProbePickler(_Sink(), 3).dump(value)
    except Exception as e:
        raise InvalidInputError('the %s can not be stored (pickled): %s: %s'
                                % (what, type(e).__name__, e)) from e


def _errorText(exc):
    return ''.join(tb_module.format_exception_only(type(exc), exc)).strip()


@zope.interface.implementer(interfaces.ITaskService)
class TaskService(persistent.Persistent):
    """See ITaskService.

    The service object itself is written only when created: every add and
    claim writes the smaller objects it holds, and concurrent adds write
    different ones (see ``structures``).
    """

    __parent__ = __name__ = None
    _routing = None     # a service made before routing gets one when used
    #: Cron jobs scheduled from the clock, for lovely's fake clock (see
    #: ``scheduling``); made when first used by a service older than it.
    _provisional = None
    #: Statistics of the runs (``stats``); made when first used by a
    #: service older than them.
    _stats = None

    def __init__(self):
        # All partitioned by the lanes of the ids (structures.partitionOf),
        # so that concurrent adds write different BTrees.
        self.jobs = JobTree()
        self._queue = JobQueue()
        self._ids = IdAllocator()
        self._index = {status: _statusIndex(status) for status in STATUSES}
        self._counts = Counts()     # per lane: adds change their own
        self._provisional = LOBTree()       # see scheduling
        self._byTask = OOBTree()
        # Queues, priorities, unique keys, limits, pauses (routing.py);
        # self._queue is its lane ('default', 0).
        self._routing = routing.Routing(self._queue)
        self._stats = stats.Statistics()

    def __setstate__(self, state):
        super().__setstate__(state)
        # A service stored before a status existed: an empty index and
        # count for it, in memory; stored with the service by the first
        # change that needs them (workflows._persistIndex).
        for status in STATUSES:
            if status not in self._index:
                self._index[status] = _statusIndex(status)

    def upgradeLayout(self):
        """Bring a service stored by an older version to the current layout
        of its structures (see ``remotetask.layout``); cheap if it is."""
        if not isinstance(self.jobs, JobTree):
            from remotetask import layout
            layout.upgrade(self)

    def __repr__(self):
        return '<%s %s>' % (self.__class__.__name__,
                            self.__name__ or hex(id(self)))

    # -- tasks ---------------------------------------------------------------

    def getAvailableTasks(self):
        """See ITaskService."""
        return dict(zope.component.getUtilitiesFor(interfaces.ITask))

    def _getTask(self, name):
        return zope.component.queryUtility(interfaces.ITask, name=name)

    def _checkTask(self, name):
        # Known here, or run by a live worker of this service (registry).
        if isinstance(name, str) and self._getTask(name) is not None:
            return
        remote = registry.liveTaskNames(self)
        if not isinstance(name, str) or name not in remote:
            raise UnknownTaskError(
                'unknown task %r; available tasks: %s' % (
                    name, ', '.join(sorted(set(self.getAvailableTasks())
                                           | remote)) or 'none'))

    def workers(self, now=None):
        """See ITaskService."""
        return registry.workers(self, now)

    # -- the one place where a job's status changes ---------------------------

    def _lane(self, job, create=False):
        # The queue partitions of the job's (queue, priority): routing.py.
        if job.priority == 0 and job.queue == routing.DEFAULT_QUEUE:
            return self._queue
        return routing.lane(self, job, create)

    def _transition(self, job, status, eta=None):
        old = job._status
        if old in WAITING_STATUSES:
            self._lane(job).remove(job.id, job.eta)
        self._index[old].remove(job.id)
        self._counts.change(job.id, old, -1)
        self._enter(job, status, eta)
        routing.entered(self, job, old, status)
        if job._links is not None:      # jobs wait for this one
            workflows.transitioned(self, job, old)

    def _enter(self, job, status, eta=None):
        job._status = status
        if status in WAITING_STATUSES:
            job.eta = eta
            self._lane(job, create=True).put(job.id, eta)
            # RelStorage: wake the idle workers once this commits.
            pgnotify.jobWaiting(self)
        else:
            job.eta = None
        self._index[status].insert(job.id)
        self._counts.change(job.id, status, 1)

    def _store(self, job):
        load = prefetcher(self._p_jar)
        if load:
            self._preload(load, job.id)
        self.jobs[job.id] = job
        # The partitions a claim and its run write, made by the job's
        # producer (its first add in a lane; later ones find them made)
        # rather than by two workers at once (docs/design.md, "Lazy
        # partitions").
        for status in _CLAIMED_STATUSES:
            prepare = getattr(self._index[status], 'prepare', None)
            if prepare is not None:     # (None: an older layout's set)
                prepare(job.id)
        # The task index: a set per (task, partition), so that producers
        # of a new task create different keys (which BTrees merge), not
        # the same one.
        key = (job.task, partitionOf(job.id))
        ids = self._byTask.get(key)
        if ids is None:
            ids = self._byTask[key] = WaitingIndex([SENTINEL])
        ids.insert(job.id)

    def _preload(self, load, jobid):
        """Load what adding ``jobid`` writes in two rounds, not one round
        trip per object (over ZEO and RelStorage, the workers' commits
        keep invalidating the lane's queue and indexes)."""
        queue = self._queue
        trees = [self.jobs, self._index[QUEUED], self._index[DELAYED]]
        _warm(load, self._counts.tallyFor(jobid),
              queue._part(jobid), queue._counter(jobid),
              self._byTask, *[root for tree in trees
                              for root in roots(tree, [jobid])])
        _warm(load, *[leaf for tree in trees
                      for leaf in leaves(tree, [jobid])])

    def _forget(self, job):
        if isinstance(job, CronJob):
            scheduling.forget(self, job)
        if job._links is not None:
            workflows.forgotten(self, job)
        ids = self._byTask.get((job.task, partitionOf(job.id)))
        if ids is not None:
            ids.remove(job.id)
        if job._status in WAITING_STATUSES:
            self._lane(job).remove(job.id, job.eta)
        self._index[job._status].remove(job.id)
        self._counts.change(job.id, job._status, -1)
        routing.forgotten(self, job)
        del self.jobs[job.id]

    def _wait(self, job, eta, now):
        """Put a job in the queue, due at ``eta`` (None: at once, or at its
        next call time for a cron job)."""
        if isinstance(job, CronJob):
            status = scheduling.waitingStatus(job)
            eta = job.timeOfNextCall(now) if eta is None else eta
        else:
            eta = now if eta is None else eta
            status = DELAYED if eta > now else QUEUED
        self._transition(job, status, eta)

    # -- adding jobs ---------------------------------------------------------

    def _newJob(self, factory, task, input, now, queue='default',
                priority=0, **kw):
        self._checkTask(task)
        checkPicklable(input)
        job = factory(self._ids.allocate(), task, input, created=now, **kw)
        # Stored only when not the default (the class says it).
        if queue != routing.DEFAULT_QUEUE:
            job.queue = queue
        if priority:
            job.priority = priority
        return job

    def add(self, task, input=None, startLater=False, delay=None, eta=None,
            time_limit=None, max_retries=None, max_starts=None, meta=None,
            now=None, queue='default', priority=0, unique_key=None,
            after=None):
        """See ITaskService."""
        now = _now(now)
        parents = None if after is None else workflows.parents(
            self, after, startLater, delay, eta)
        # Everything is checked before anything is stored.
        routing.checkQueue(queue)
        routing.checkPriority(priority)
        routing.checkUniqueKey(unique_key)
        if delay is not None and eta is not None:
            raise InvalidInputError('give either delay or eta, not both')
        if delay is not None:
            eta = now + limits.checkTime('delay', delay, now)
        elif eta is not None:
            eta = limits.checkTime('eta', eta)
        if time_limit is not None:
            time_limit = _number('time_limit', time_limit, 0, allowLow=False,
                                 infinite=True)     # inf: no limit
        if max_retries is not None:
            max_retries = _number('max_retries', max_retries, 0, True)
        if max_starts is not None:
            max_starts = _number('max_starts', max_starts, 1, True)
        if meta:
            if not isinstance(meta, dict):
                raise InvalidInputError('meta must be a dict, not %r'
                                        % (meta,))
            checkPicklable(meta, 'meta data')
        if unique_key is not None:
            self._checkTask(task)
            holder = routing.existing(self, unique_key)
            if holder is not None:
                return holder
        job = self._newJob(Job, task, input, now, queue, priority)
        if unique_key is not None:
            job.unique_key = unique_key
            routing.holdKey(self, unique_key, job.id)
        # Set only when given: the class says None, and every attribute in
        # the job's state costs pickling time on each add.
        if time_limit is not None:
            job.time_limit = time_limit
        if max_retries is not None:
            job.max_retries = max_retries
        if max_starts is not None:
            job.max_starts = max_starts
        if meta:
            job.meta = dict(meta)
        self._store(job)
        if parents:
            workflows.defer(self, job, parents, now)
        elif startLater:
            job.eta = None
            self._enter(job, STARTLATER)
            if eta is not None:
                job.meta['eta'] = eta
        else:
            eta = now if eta is None else eta
            self._enter(job, DELAYED if eta > now else QUEUED, eta)
        return job.id

    def chain(self, steps, after=None, now=None):
        """See ITaskService."""
        return workflows.chain(self, steps, after, _now(now))

    def group(self, steps, then=None, after=None, now=None):
        """See ITaskService."""
        return workflows.group(self, steps, then, after, _now(now))

    def addCronJob(self, task, input=None, minute=(), hour=(), dayOfMonth=(),
                   month=(), dayOfWeek=(), delay=None, expression=None,
                   timezone=None, now=None, queue='default', priority=0,
                   interval=None):
        """See ITaskService."""
        given, now = now is not None, _now(now)
        routing.checkQueue(queue)
        routing.checkPriority(priority)
        job = self._newJob(CronJob, task, input, now, queue, priority,
                           minute=minute,
                           hour=hour, dayOfMonth=dayOfMonth, month=month,
                           dayOfWeek=dayOfWeek, delay=delay,
                           expression=expression, timezone=timezone,
                           interval=interval)
        self._store(job)
        self._enter(job, scheduling.waitingStatus(job),
                    job.timeOfNextCall(now))
        scheduling.provisional(self, job, given)
        return job.id

    # -- managing jobs -------------------------------------------------------

    def _job(self, jobid):
        try:
            return self.jobs[jobid]
        except (KeyError, TypeError):
            raise JobNotFoundError('no job with id %r' % (jobid,))

    def _refuse(self, job, what, allowed):
        if job._status not in allowed:
            raise InvalidStatusError(
                'can not %s job %s: it is %r (only %s)' % (
                    what, job.id, job._status,
                    ', '.join(repr(s) for s in allowed)))

    def startJob(self, jobid, now=None):
        """See ITaskService."""
        job = self._job(jobid)
        if job._status != STARTLATER:
            return False
        now = _now(now)
        eta = job.meta.pop('eta', None) if job.meta else None
        if job.meta is not None:
            job.meta = dict(job.meta)
        self._wait(job, eta, now)
        return True

    def reschedule(self, jobid, now=None):
        """See ITaskService."""
        job = self._job(jobid)
        if not isinstance(job, CronJob):
            raise InvalidStatusError('job %s is not a cron job' % job.id)
        self._refuse(job, 'reschedule', (CRONJOB, DELAYED, CANCELLED, ERROR,
                                         COMPLETED))
        given, now = now is not None, _now(now)
        self._transition(job, scheduling.waitingStatus(job),
                         job.timeOfNextCall(now))
        scheduling.provisional(self, job, given)

    def cancel(self, jobid, now=None):
        """See ITaskService."""
        job = self._job(jobid)
        self._refuse(job, 'cancel', WAITING_STATUSES + (STARTLATER,
                                                        DEFERRED,
                                                        PROCESSING))
        if job._status == PROCESSING:
            # Asked, not done: the run ends it (see remotetask.limits).
            limits.requestCancel(job, _now(now))
        else:
            self._endCancelled(job, now)

    def _endCancelled(self, job, now):
        job.completed = _now(now)
        self._transition(job, CANCELLED)
        events.notify(events.JobCancelled(job, self))

    def retry(self, jobid, now=None):
        """See ITaskService."""
        job = self._job(jobid)
        self._refuse(job, 'retry', (ERROR, CANCELLED))
        now = _now(now)
        job.starts = 0
        job.retries = 0
        if job._after:
            workflows.retry(self, job, now)
        elif isinstance(job, CronJob) and job.repeats():
            self._transition(job, CRONJOB, job.timeOfNextCall(now))
        else:
            self._transition(job, QUEUED, now)

    def delete(self, jobid):
        """See ITaskService."""
        job = self._job(jobid)
        if job._status == PROCESSING:
            raise InvalidStatusError(
                'can not delete job %s: it is processing (cancel it: it '
                'ends cancelled when its run returns)' % job.id)
        workflows.deleting(self, job)
        retention.forget(self, job, 'delete')

    def clean(self, status=interfaces.CLEANABLE_STATUSES, before=None):
        """See ITaskService."""
        if isinstance(status, str):
            status = (status,)
        retention.clean(self, tuple(status), before)

    _retention = None       # a retention.RetentionState once set

    @property
    def retention(self):
        """See ITaskService."""
        return retention.Retention(self)

    @retention.setter
    def retention(self, value):
        retention.Retention(self).replace(value)

    # -- reading -------------------------------------------------------------

    def getStatus(self, jobid):
        """See ITaskService."""
        return self._job(jobid).status

    def getResult(self, jobid):
        """See ITaskService."""
        return self._job(jobid).output

    def getError(self, jobid):
        """See ITaskService."""
        return self._job(jobid).error

    def count(self, status=None):
        """See ITaskService."""
        if status is None:
            return sum(self._counts.counts().values())
        if status not in self._index:
            raise ValueError('unknown status %r' % (status,))
        return self._counts.count(status)

    def counts(self):
        """See ITaskService."""
        found = self._counts.counts()
        return {status: found.get(status, 0) for status in STATUSES}

    def jobIds(self, status=None, task=None):
        """See ITaskService."""
        if status is not None and status not in self._index:
            raise ValueError('unknown status %r' % (status,))
        byStatus = None if status is None else self._index[status]
        if task is None:
            return self.jobs if byStatus is None else byStatus
        byTask = IdSetView(self._byTask.get((task, n), _NONE)
                           for n in range(PARTITIONS))
        if byStatus is None:
            return byTask
        return intersect(byStatus, byTask)

    def taskNames(self):
        """See ITaskService."""
        names = []
        for name, partition in self._byTask.keys():
            if not names or names[-1] != name:
                names.append(name)
        return names

    def queue(self):
        """See ITaskService."""
        return routing.entries(self)

    def oldestWaiting(self):
        """See ITaskService."""
        return routing.oldest(self)

    def hasJobsWaiting(self, now=None):
        """See ITaskService."""
        if now is not None:
            return scheduling.hasJobsWaiting(self, now)
        return routing.hasDue(self, _now(now))

    # -- routing and flow control (routing.py) -------------------------------

    def queues(self, now=None):
        """See ITaskService."""
        return routing.queues(self, _now(now))

    def pause(self, queue=None, task=None, now=None):
        """See ITaskService."""
        return routing.pause(self, queue, task, _now(now))

    def resume(self, queue=None, task=None):
        """See ITaskService."""
        return routing.resume(self, queue, task)

    def paused(self):
        """See ITaskService."""
        return routing.paused(self)

    def pausedCount(self):
        """See ITaskService."""
        return routing.pausedCount(self)

    def retryAll(self, queue=None, task=None, now=None, dry_run=False,
                 limit=None):
        """See ITaskService."""
        return bulk.retryAll(self, queue, task, now, dry_run, limit)

    def purge(self, queue=None, task=None, dry_run=False, limit=None):
        """See ITaskService."""
        return bulk.purge(self, queue, task, dry_run, limit)

    def deleteJobs(self, status=None, queue=None, task=None, before=None,
                   dry_run=False, limit=None):
        """See ITaskService."""
        return bulk.deleteJobs(self, status, queue, task, before, dry_run,
                               limit)

    # -- processing ----------------------------------------------------------

    def claim(self, now=None, worker=None, limit=1, lease=None, spread=False,
              tasks=None, queues=None):
        """See ITaskService."""
        now = _now(now)
        queues = routing.checkQueues(queues)
        gate = routing.Gate(self, now, tasks)
        claimed = []
        # What a claim reads and writes, loaded ahead in a few rounds rather
        # than one round trip per object (it matters over ZEO and RelStorage
        # when other workers' commits have invalidated all of it).
        load = prefetcher(self._p_jar)
        if load:
            # What this connection's last claim found every other
            # worker's claims had changed: the lanes' counters (claimOrder
            # reads them one after the other) and the tallies of the lanes
            # it took jobs from (else a round trip of their own, below).
            load(getattr(self, '_v_claimAhead', ()))
            _warm(load, self._counts, self._routing, self.jobs,
                  self._index[QUEUED], self._index[PROCESSING])
        for queue, lane in routing.claimOrder(self, queues, spread, load):
            self._claimFrom(lane, queue, gate, now, worker, limit, lease,
                            spread, claimed, load)
            if len(claimed) >= limit:
                break
        if load:
            tallies = {}
            for job in claimed:
                tally = self._counts.tallyFor(job.id)
                tallies[id(tally)] = tally
            self._v_claimAhead = routing.loadedCounters(self) + tuple(
                tallies.values())
        return claimed

    def _claimFrom(self, queue, name, gate, now, worker, limit, lease,
                   spread, claimed, load):
        """Claim due jobs of one lane (``queue``, a JobQueue, of the queue
        ``name``) until ``claimed`` holds ``limit`` jobs."""
        start = claimPartition(len(queue._parts)) if spread else None
        if load:
            first = queue._parts[start or 0]
            if queue is not self._queue:
                # A claim may go through several lanes, each looked through
                # partition by partition: load a lane's partitions that
                # other transactions changed in one round, not one by one.
                load(queue._parts)
            _warm(load, first)
            _warm(load, firstLeaf(first))
        seen = set()
        took = 0
        held = gate.held
        for extra in (0, SCAN_PAST):
            wanted = limit - len(claimed)
            due = queue.due(now, wanted + extra, start,
                            home() if spread else None)
            if load:
                ids = [jobid for eta, jobid in due[:wanted]]
                trees = (self.jobs, self._index[QUEUED],
                         self._index[PROCESSING])
                _warm(load, *([root for tree in trees
                               for root in roots(tree, ids)]
                              + [self._counts.tallyFor(i) for i in ids]))
                _warm(load, *[leaf for tree in trees
                              for leaf in leaves(tree, ids)])
                _warm(load, *[self.jobs.get(jobid) for jobid in ids])
            for eta, jobid in due:
                if len(claimed) >= limit:
                    break
                if jobid in seen:
                    continue
                seen.add(jobid)
                job = self.jobs.get(jobid)
                if job is None or job._status not in WAITING_STATUSES \
                        or job.eta != eta:
                    # A stale entry: never expected, never worth a loop.
                    log.warning('dropping stale queue entry %r', (eta, jobid))
                    queue.remove(jobid, eta)
                    continue
                if limits.cancelRequested(job):
                    # A cron job cancelled as its last run ended.
                    self._endCancelled(job, now)
                    continue
                if not gate.admit(job, name):
                    continue        # held back: left in the queue
                self._begin(job, now, worker, lease)
                claimed.append(job)
                took += 1
            if len(claimed) >= limit or gate.held == held:
                break
        if spread and took:
            keepPartition(queue.partitionOf(claimed[-1].id))

    def _begin(self, job, now, worker, lease):
        self._transition(job, PROCESSING)
        job.starts += 1
        job.started = now
        job.worker = worker
        # A fresh lease and progress object per start, one object for both
        # (job._Run): renewals, reports and cancel requests (from
        # connections of their own) never write the job, so never conflict
        # with its end.
        job._lease = job._progress = _Run(
            worker, None if lease is None else now + lease)
        job._addAttempt(start=now, end=None, worker=worker, outcome=None,
                        error=None)

    def claimNextJob(self, now=None):
        """See ITaskService."""
        return scheduling.claimNext(self, now)

    def owns(self, job, token):
        """See ITaskService."""
        return job._status == PROCESSING and job.attempt_count == token

    def claimToken(self, job):
        """See ITaskService."""
        return job.attempt_count

    def run(self, job, now=None, reporter=None, cancelled=None,
            defer=False):
        """See ITaskService.

        ``defer=True`` (a worker running several claimed jobs in one
        transaction): run the task, then return a callable that records
        its outcome (and returns what ``run`` would), to be called after
        the other jobs' tasks ran.  Each task runs under a savepoint so
        that a failing one rolls back alone; with the outcomes recorded at
        the end, that savepoint holds what the previous task wrote, not
        the status indexes, tallies and statistics every outcome changes
        (which the savepoint would pickle again for each job).  The job
        ends when its task did (unless ``now`` is given).
        """
        try:
            return self._run(job, now, reporter, cancelled, defer)
        finally:
            # The run's volatile attributes go with it: a job stays in its
            # connection's cache (up to the cache size, thousands in a
            # worker), and the cancel event (a Condition, a lock, a deque:
            # about 2 KB) with it.  A deferred outcome sets them again.
            job.__dict__.pop('_v_cancelEvent', None)
            if defer:
                job.__dict__.pop('_v_begun', None)

    def _run(self, job, now, reporter, cancelled, defer):
        if defer:
            def finish(record, *args):
                # The run's volatile attributes, kept here: the job may be
                # ghosted (its cache trimmed) before the outcome is recorded.
                begun = getattr(job, '_v_begun', None)
                ended = time.time()

                def later():
                    if begun is not None:
                        job._v_begun = begun
                    job._v_ended = ended
                    job._v_cancelEvent = cancelled
                    try:
                        return record(*args)
                    finally:
                        for name in ('_v_ended', '_v_begun',
                                     '_v_cancelEvent'):
                            job.__dict__.pop(name, None)
                return later
        else:
            def finish(record, *args):
                return record(*args)
        if job._status != PROCESSING:
            raise InvalidStatusError('job %s is %r, not processing: claim it '
                                     'first' % (job.id, job._status))
        task = self._getTask(job.task)
        if task is None:
            return finish(self._fail, job, 'unknown task %r' % job.task,
                          None, now)
        # What the end of the run writes: loaded while the task runs.
        load = prefetcher(self._p_jar)
        ends = (self._index[PROCESSING], self._index[COMPLETED],
                self._counts.tallyFor(job.id)) + (
                    stats.written(self, time.time()) if load else ())
        if load:
            load(ends)
        if now is None:
            # A job claimed with others starts when its run does, not at
            # the claim (a given ``now`` is the end: keep the claim's).
            # Recorded when it ends (``_settle``): a change now would make
            # the savepoint below write the job to a temporary file.
            job._v_begun = time.time()
        events.notify(events.JobStarted(job, self))
        job._v_cancelEvent = cancelled      # for _cancelledRun
        context = TaskContext(self, job, reporter, cancelled)
        savepoint = _savepoint(job._p_jar or self._p_jar)
        started = time.monotonic()
        token = self.claimToken(job)
        try:
            with running(context):
                try:
                    result = task(self, job.id, job.input)
                finally:
                    self._checkOwned(job, token)
            limit = policy(task, job, 'time_limit')
            elapsed = time.monotonic() - started
            if limit is not None and elapsed > limit:
                raise TimeLimitExceeded(
                    'time limit of %gs exceeded (ran %.1fs)' % (limit,
                                                                 elapsed))
            checkPicklable(result, 'result')
            if load:
                _warm(load, *ends)
                trees = (self._index[PROCESSING], self._index[COMPLETED])
                _warm(load, *[root for tree in trees
                              for root in roots(tree, [job.id])])
                _warm(load, *[leaf for tree in trees
                              for leaf in leaves(tree, [job.id])])
        except TransientError:
            raise
        except Retry as e:
            _rollback(savepoint)
            delay = e.delay
            if delay is None:
                delay = retryDelay(task, job.retries + 1)
            return finish(self._retry, job,
                          e.message or 'retry asked by the task', delay, now)
        except (TaskError, InvalidInputError) as e:
            _rollback(savepoint)
            if isinstance(e, tuple(getattr(task, 'retry_on', ()))):
                return finish(self._retry, job, str(e),
                              retryDelay(task, job.retries + 1), now)
            return finish(self._fail, job, str(e), None, now)
        except Exception as e:
            trace = tb_module.format_exc()
            _rollback(savepoint)
            log.error('job %s (task %r) failed:\n%s', job.id, job.task, trace)
            if isinstance(e, tuple(getattr(task, 'retry_on', ()))):
                return finish(self._retry, job, _errorText(e),
                              retryDelay(task, job.retries + 1), now, trace)
            return finish(self._fail, job, _errorText(e), trace, now)
        return finish(self._succeed, job, result, now)

    def _cancelledRun(self, job, now, cancelled):
        """End the run as ``cancelled`` if that was asked while it ran (a
        cancel request the clock saw, or one already in this snapshot)."""
        if not (getattr(cancelled, 'requested', False)
                or limits.cancelRequested(job)):
            return None
        self._settle(job, now, CANCELLED, 'cancelled while running')
        self._endCancelled(job, now)
        return CANCELLED

    @staticmethod
    def _v_cancelled(job):
        return getattr(job, '_v_cancelEvent', None)

    def _checkOwned(self, job, token):
        # After the task: if it aborted or committed the transaction, the
        # job may have been handed back or ended meanwhile; never write an
        # outcome over that (the caller's tm.attempts() retries LeaseLost).
        if not self.owns(job, token):
            raise LeaseLost('job %s is no longer processing under this claim '
                            '(it is %r): result dropped'
                            % (job.id, job._status))

    def giveUp(self, job, error, exc=None, trace=None, now=None):
        """See ITaskService."""
        self._refuse(job, 'give up', (PROCESSING,))
        task = self._getTask(job.task)
        retryable = (TransientError,) + tuple(getattr(task, 'retry_on', ()))
        if task is not None and isinstance(exc, retryable):
            return self._retry(job, error, retryDelay(task, job.retries + 1),
                               now, trace)
        return self._fail(job, error, trace, now)

    def _settle(self, job, now, outcome, error=None):
        """End the current attempt and go where a job goes after a run."""
        # A deferred outcome (``run(defer=True)``): when the task ended.
        ended = getattr(job, '_v_ended', None)
        if ended is not None:
            del job._v_ended
        end = ended if now is None and ended is not None else _now(now)
        record = dict(end=end, outcome=outcome, error=error)
        begun = getattr(job, '_v_begun', None)
        if begun is not None:
            del job._v_begun
            job.started = record['start'] = begun
        job.completed = end
        job._lease = None
        job._endAttempt(**record)
        stats.record(self, job, outcome, end, error)
        return end

    def _succeed(self, job, result, now):
        if self._cancelledRun(job, now, self._v_cancelled(job)):
            return CANCELLED
        end = self._settle(job, now, COMPLETED)
        job.output = result
        if isinstance(job, CronJob) and scheduling.runsAgain(self, job):
            job.error = job.traceback = None
            job.starts = 0
            self._transition(job, CRONJOB, job.timeOfNextCall(end))
        else:
            self._transition(job, COMPLETED)
        events.notify(events.JobCompleted(job, self))
        return job._status

    def _fail(self, job, error, trace, now):
        if self._cancelledRun(job, now, self._v_cancelled(job)):
            return CANCELLED
        end = self._settle(job, now, ERROR, error)
        job.error = error
        job.traceback = trace
        if isinstance(job, CronJob) and scheduling.runsAgain(self, job):
            job.starts = 0
            self._transition(job, CRONJOB, job.timeOfNextCall(end))
        else:
            self._transition(job, ERROR)
        events.notify(events.JobFailed(job, self))
        return ERROR

    def _retry(self, job, message, delay, now, trace=None):
        if self._cancelledRun(job, now, self._v_cancelled(job)):
            return CANCELLED
        task = self._getTask(job.task)
        limit = policy(task, job, 'max_retries')
        if job.retries >= limit:
            return self._fail(job, '%s (gave up after %d retries)'
                              % (message, job.retries), trace, now)
        end = self._settle(job, now, 'retry', message)
        job.retries += 1
        job.starts = 0
        job.error = message
        job.traceback = trace
        eta = end + max(0.0, float(delay))
        self._transition(job, DELAYED if eta > end else QUEUED, eta)
        events.notify(events.JobRetried(job, self))
        return 'retry'

    def handBack(self, job, now=None, reason='handed back', ran=False):
        """See ITaskService."""
        self._refuse(job, 'hand back', (PROCESSING,))
        completed = job.completed
        self._settle(job, now, 'handed back', reason)
        job.completed = completed       # it did not complete now
        if not ran:
            # Claimed, never started: it keeps the start of its last run.
            job.starts = max(0, job.starts - 1)
            runs = [a for a in job.attempts[:-1]
                    if a.get('outcome') != 'handed back']
            job.started = runs[-1].get('start') if runs else None
        self._transition(job, QUEUED, _now(now))

    def reap(self, now=None):
        """See ITaskService."""
        now = _now(now)
        reaped = []
        for jobid in list(self.jobIds(PROCESSING)):
            job = self.jobs[jobid]
            task = self._getTask(job.task)
            expires = job.lease_expires
            limit = policy(task, job, 'time_limit')
            if not isinstance(limit, (int, float, type(None))):
                log.error('job %s: time limit %r is not a number; ignored',
                          jobid, limit)
                limit = None
            if limit is not None and job.started is not None \
                    and now > job.started + limit:
                error = 'time limit of %gs exceeded' % limit
                if TimeLimitExceeded in tuple(getattr(task, 'retry_on', ())):
                    self._retry(job, error, retryDelay(task, job.retries + 1),
                                now)
                else:
                    self._fail(job, error, None, now)
            elif expires is not None and expires < now:
                maxstarts = policy(task, job, 'max_starts')
                if job.starts >= maxstarts:
                    self._fail(job, 'started %d times, the maximum '
                               '(max_starts=%d): its worker stopped renewing '
                               'its lease each time' % (job.starts, maxstarts),
                               None, now)
                else:
                    self._settle(job, now, 'lost', 'lease expired')
                    self._transition(job, QUEUED, now)
            else:
                continue
            reaped.append(jobid)
        return reaped

    def maintain(self, now=None):
        """See ITaskService."""
        now = _now(now)
        reaped = self.reap(now)
        for name, hook in sorted(zope.component.getUtilitiesFor(
                interfaces.IServiceMaintenance)):
            savepoint = _savepoint(self._p_jar)
            try:
                hook(self, now)
            except TransientError:
                raise
            except Exception:
                _rollback(savepoint)
                log.exception('maintenance %r failed; ignored', name)
        return reaped

    def processNext(self, now=None, jobid=None):
        """See ITaskService."""
        if jobid is not None:
            job = self._job(jobid)
            self._refuse(job, 'process', WAITING_STATUSES + (STARTLATER,))
            if job._status == STARTLATER:
                self._transition(job, QUEUED, _now(now))
            self._begin(job, _now(now), None, None)
        else:
            job = self.claimNextJob(now)
            if job is None:
                return False
        self.run(job, now)
        return True

    def process(self, now=None):
        """See ITaskService."""
        due = _now(now)
        while True:
            job = scheduling.claimNext(self, now, due)
            if job is None:
                break
            self.run(job, now)

    # -- processors (see remotetask.processor) -------------------------------

    def startProcessing(self, **options):
        """See ITaskService."""
        from remotetask import processor
        return processor.startProcessing(self, **options)

    def stopProcessing(self, timeout=None):
        """See ITaskService."""
        from remotetask import processor
        return processor.stopProcessing(self, timeout)

    def isProcessing(self):
        """See ITaskService."""
        from remotetask import processor
        return processor.isProcessing(self)


#: The ids of a task without jobs in a partition (never stored).
_NONE = IdIndex()


#: The statuses whose index a claim and its run change (a claim takes ids
#: out of ``queued`` and puts them in ``processing``; the run moves them to
#: ``completed``): split like the queue, ``SPREAD`` partitions per lane, so
#: that workers claiming from queue partitions of their own (claim slots)
#: change index partitions of their own as well (docs/design.md, "Claim
#: slots").
_CLAIMED_STATUSES = (QUEUED, PROCESSING, COMPLETED)


def _statusIndex(status):
    """A new index for ``status``: a waiting status's leaves are rewritten
    by every add, so they are smaller (see structures.WaitingIndex)."""
    waiting = status in WAITING_STATUSES or status in (STARTLATER, DEFERRED)
    partitions = PARTITIONS * SPREAD if status in _CLAIMED_STATUSES \
        else PARTITIONS
    return IdSet(WaitingIndex if waiting else IdIndex, partitions)


def _warm(load, *objects):
    """Load ``objects`` (persistent, or None) with ``load`` (a
    ``structures.prefetcher``) in one round, and activate them."""
    load(objects)
    for ob in objects:
        if ob is not None:
            ob._p_activate()


def _savepoint(jar):
    """A savepoint of the transaction the service's connection ``jar`` is
    in (its own transaction manager's, which need not be the thread's
    default one); of the default transaction when detached."""
    manager = transaction.manager if jar is None else jar.transaction_manager
    try:
        return manager.savepoint(optimistic=True)
    except Exception:
        log.warning('no savepoint: a failing task can not be rolled back '
                    'alone', exc_info=True)
        return None


def _rollback(savepoint):
    if savepoint is None:
        return
    try:
        savepoint.rollback()
    except Exception:
        # The task committed or aborted the transaction itself: what it
        # committed stays; the bookkeeping goes on in the current one.
        log.warning('could not roll back the failed task\'s changes (did it '
                    'commit or abort the transaction itself?)', exc_info=True)

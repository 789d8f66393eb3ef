"""The task service.  See ``interfaces.ITaskService``."""
import logging
import pickle
import time
import traceback as tb_module

import persistent
import transaction
import zope.component
import zope.interface
from BTrees.Length import Length
from BTrees.LOBTree import LOBTree, LOTreeSet
from BTrees.LOBTree import intersection as _intersection
from BTrees.OOBTree import OOBTree
from transaction.interfaces import TransientError

from remotetask import events, interfaces, registry
from remotetask.interfaces import (
    CANCELLED, COMPLETED, CRONJOB, DELAYED, ERROR, FINAL_STATUSES, PROCESSING,
    QUEUED, STARTLATER, STATUSES, WAITING_STATUSES, InvalidInputError,
    InvalidStatusError, JobNotFoundError, Retry, TaskError, TimeLimitExceeded,
    LeaseLost, UnknownTaskError)
from remotetask.job import (CronJob, Job, TaskContext, _Lease, _Progress,
                            running)
from remotetask.structures import (
    SENTINEL, IdAllocator, IdIndex, IdsView, JobQueue, WaitingIndex,
    claimPartition, firstLeaf, keepPartition, leaves, prefetcher)
from remotetask.task import policy, retryDelay

log = logging.getLogger('remotetask')


#: Statuses whose index every add, claim and completion changes: they hold
#: the never-removed key SENTINEL (see below and docs/design.md).
HOT_STATUSES = WAITING_STATUSES + (PROCESSING,)


#: How many due jobs of other tasks a claim limited to some ``tasks`` looks
#: past (see ITaskService.claim).
SCAN_PAST = 256


def _now(now):
    return time.time() if now is None else now


class _ProbePickler(pickle.Pickler):
    """Pickles like ZODB does: persistent objects are references."""

    def persistent_id(self, obj):
        if isinstance(obj, persistent.Persistent):
            return id(obj)
        return None


class _Sink:
    def write(self, data):
        pass


def checkPicklable(value, what='input'):
    """Raise InvalidInputError if ``value`` can not be stored in the ZODB."""
    try:
        _ProbePickler(_Sink(), 3).dump(value)
    except Exception as e:
        raise InvalidInputError('the %s can not be stored (pickled): %s: %s'
                                % (what, type(e).__name__, e)) from e


def _number(name, value, low=None, integer=False, allowLow=True):
    """``value`` as a float (or int), or InvalidInputError naming ``name``."""
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise InvalidInputError('%s must be %s, not %r' % (
            name, 'an integer' if integer else 'a number', value))
    if low is not None and (value < low or (value == low and not allowLow)):
        raise InvalidInputError('%s must be %s %s, not %r' % (
            name, '>=' if allowLow else '>', low, value))
    return value if integer else float(value)


def _errorText(exc):
    return ''.join(tb_module.format_exception_only(type(exc), exc)).strip()


@zope.interface.implementer(interfaces.ITaskService)
class TaskService(persistent.Persistent):
    """See ITaskService.

    The service object itself is written only when created: every add and
    claim writes the smaller objects it holds (see ``structures``).
    """

    __parent__ = __name__ = None

    def __init__(self):
        self.jobs = LOBTree()
        self._queue = JobQueue()
        self._ids = IdAllocator()
        self._index = {status: WaitingIndex() if status in WAITING_STATUSES
                       or status == STARTLATER else IdIndex()
                       for status in STATUSES}
        # A key that is never removed keeps the busiest indexes from the
        # two changes BTrees can not merge: removing a bucket's first key
        # and emptying it.  Without it a claim (which removes the oldest
        # queued id, the first key) conflicted with every concurrent add
        # while the backlog fits in one bucket, and a completion with any
        # concurrent claim.  Job ids start at 1; jobIds() hides the key.
        for status in HOT_STATUSES:
            self._index[status].insert(SENTINEL)
        self._counts = {status: Length() for status in STATUSES}
        self._byTask = OOBTree()

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

    def _transition(self, job, status, eta=None):
        old = job._status
        if old in WAITING_STATUSES:
            self._queue.remove(job.id, job.eta)
        self._index[old].remove(job.id)
        self._counts[old].change(-1)
        self._enter(job, status, eta)

    def _enter(self, job, status, eta=None):
        job._status = status
        if status in WAITING_STATUSES:
            job.eta = eta
            self._queue.put(job.id, eta)
        else:
            job.eta = None
        self._index[status].insert(job.id)
        self._counts[status].change(1)

    def _store(self, job):
        self.jobs[job.id] = job
        ids = self._byTask.get(job.task)
        if ids is None:
            ids = self._byTask[job.task] = LOTreeSet()
        ids.insert(job.id)

    def _forget(self, job):
        ids = self._byTask.get(job.task)
        if ids is not None:
            ids.remove(job.id)
        if job._status in WAITING_STATUSES:
            self._queue.remove(job.id, job.eta)
        self._index[job._status].remove(job.id)
        self._counts[job._status].change(-1)
        del self.jobs[job.id]

    def _wait(self, job, eta, now):
        """Put a job in the queue, due at ``eta`` (None: at once, or at its
        next call time for a cron job)."""
        if isinstance(job, CronJob):
            status = CRONJOB
            eta = job.timeOfNextCall(now) if eta is None else eta
        else:
            eta = now if eta is None else eta
            status = DELAYED if eta > now else QUEUED
        self._transition(job, status, eta)

    # -- adding jobs ---------------------------------------------------------

    def _newJob(self, factory, task, input, now, **kw):
        self._checkTask(task)
        checkPicklable(input)
        job = factory(self._ids.allocate(), task, input, created=now, **kw)
        return job

    def add(self, task, input=None, startLater=False, delay=None, eta=None,
            time_limit=None, max_retries=None, max_starts=None, meta=None,
            now=None):
        """See ITaskService."""
        now = _now(now)
        # Everything is checked before anything is stored.
        if delay is not None and eta is not None:
            raise InvalidInputError('give either delay or eta, not both')
        if delay is not None:
            eta = now + _number('delay', delay)
        elif eta is not None:
            eta = _number('eta', eta)
        if time_limit is not None:
            time_limit = _number('time_limit', time_limit, 0, allowLow=False)
        if max_retries is not None:
            max_retries = _number('max_retries', max_retries, 0, True)
        if max_starts is not None:
            max_starts = _number('max_starts', max_starts, 1, True)
        if meta:
            if not isinstance(meta, dict):
                raise InvalidInputError('meta must be a dict, not %r'
                                        % (meta,))
            checkPicklable(meta, 'meta data')
        job = self._newJob(Job, task, input, now)
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
        if startLater:
            job.eta = None
            self._enter(job, STARTLATER)
            if eta is not None:
                job.meta['eta'] = eta
        else:
            eta = now if eta is None else eta
            self._enter(job, DELAYED if eta > now else QUEUED, eta)
        return job.id

    def addCronJob(self, task, input=None, minute=(), hour=(), dayOfMonth=(),
                   month=(), dayOfWeek=(), delay=None, expression=None,
                   timezone=None, now=None):
        """See ITaskService."""
        now = _now(now)
        job = self._newJob(CronJob, task, input, now, minute=minute,
                           hour=hour, dayOfMonth=dayOfMonth, month=month,
                           dayOfWeek=dayOfWeek, delay=delay,
                           expression=expression, timezone=timezone)
        self._store(job)
        self._enter(job, CRONJOB, job.timeOfNextCall(now))
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
        self._refuse(job, 'start', (STARTLATER,))
        now = _now(now)
        eta = job.meta.pop('eta', None) if job.meta else None
        if job.meta is not None:
            job.meta = dict(job.meta)
        self._wait(job, eta, now)

    def reschedule(self, jobid, now=None):
        """See ITaskService."""
        job = self._job(jobid)
        if not isinstance(job, CronJob):
            raise InvalidStatusError('job %s is not a cron job' % job.id)
        self._refuse(job, 'reschedule', (CRONJOB, CANCELLED, ERROR))
        now = _now(now)
        self._transition(job, CRONJOB, job.timeOfNextCall(now))

    def cancel(self, jobid):
        """See ITaskService."""
        job = self._job(jobid)
        self._refuse(job, 'cancel', WAITING_STATUSES + (STARTLATER,))
        self._transition(job, CANCELLED)
        events.notify(events.JobCancelled(job, self))

    def retry(self, jobid, now=None):
        """See ITaskService."""
        job = self._job(jobid)
        self._refuse(job, 'retry', (ERROR, CANCELLED))
        now = _now(now)
        job.starts = 0
        job.retries = 0
        if isinstance(job, CronJob):
            self._transition(job, CRONJOB, job.timeOfNextCall(now))
        else:
            self._transition(job, QUEUED, now)

    def delete(self, jobid):
        """See ITaskService."""
        job = self._job(jobid)
        if job._status == PROCESSING:
            raise InvalidStatusError(
                'can not delete job %s: it is processing' % job.id)
        self._forget(job)

    def clean(self, status=interfaces.CLEANABLE_STATUSES, before=None):
        """See ITaskService."""
        if isinstance(status, str):
            status = (status,)
        status = tuple(status)
        for s in status:
            if s not in FINAL_STATUSES:
                raise InvalidStatusError(
                    'can not clean jobs that are %r: only final statuses '
                    '(%s) can be cleaned' % (s, ', '.join(FINAL_STATUSES)))
        for s in status:
            for jobid in list(self._index[s]):
                job = self.jobs[jobid]
                if before is None or (job.completed or job.created) < before:
                    self._forget(job)

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
            return sum(c() for c in self._counts.values())
        if status not in self._counts:
            raise ValueError('unknown status %r' % (status,))
        return self._counts[status]()

    def counts(self):
        """See ITaskService."""
        return {status: self._counts[status]() for status in STATUSES}

    def jobIds(self, status=None, task=None):
        """See ITaskService."""
        if status is not None and status not in self._index:
            raise ValueError('unknown status %r' % (status,))
        byStatus = None if status is None else self._index[status]
        if task is None:
            if byStatus is None:
                return self.jobs.keys()
            return IdsView(byStatus) if SENTINEL in byStatus else byStatus
        byTask = self._byTask.get(task, LOTreeSet())
        if byStatus is None:
            return byTask
        return _intersection(byStatus, byTask)      # ids only: no sentinel

    def taskNames(self):
        """See ITaskService."""
        return self._byTask.keys()

    def queue(self):
        """See ITaskService."""
        return iter(self._queue)

    def oldestWaiting(self):
        """See ITaskService."""
        return self._queue.oldest()

    def hasJobsWaiting(self, now=None):
        """See ITaskService."""
        return self._queue.hasDue(_now(now))

    # -- processing ----------------------------------------------------------

    def claim(self, now=None, worker=None, limit=1, lease=None, spread=False,
              tasks=None):
        """See ITaskService."""
        now = _now(now)
        queue = self._queue
        start = claimPartition(len(queue._parts)) if spread else None
        # What a claim reads and writes, loaded ahead in a few rounds rather
        # than one round trip per object (it matters over ZEO and RelStorage
        # when other workers' commits have invalidated all of it).
        load = prefetcher(self._p_jar)
        if load:
            first = queue._parts[start or 0]
            _warm(load, queue._length, first, self.jobs, self._index[QUEUED],
                  self._index[PROCESSING], self._counts[QUEUED],
                  self._counts[PROCESSING])
            _warm(load, firstLeaf(first))
        claimed = []
        seen = set()
        skipped = False
        for wanted in (limit, limit + SCAN_PAST):
            due = queue.due(now, wanted, start)
            if load:
                ids = [jobid for eta, jobid in due[:limit]]
                _warm(load, *(leaves(self.jobs, ids)
                              + leaves(self._index[QUEUED], ids)
                              + leaves(self._index[PROCESSING], ids)))
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
                if tasks is not None and job.task not in tasks:
                    skipped = True      # for a worker that has that task
                    continue
                self._begin(job, now, worker, lease)
                claimed.append(job)
            if len(claimed) >= limit or not skipped:
                break
        if spread and claimed:
            keepPartition(queue.partitionOf(claimed[-1].id))
        return claimed

    def _begin(self, job, now, worker, lease):
        self._transition(job, PROCESSING)
        job.starts += 1
        job.started = now
        job.worker = worker
        job._lease = _Lease(worker, None if lease is None else now + lease)
        # A fresh progress object per start: reports (from a connection of
        # their own) never write the job, so never conflict with its end.
        job._progress = _Progress()
        job._addAttempt(start=now, end=None, worker=worker, outcome=None,
                        error=None)

    def claimNextJob(self, now=None):
        """See ITaskService."""
        claimed = self.claim(now)
        return claimed[0] if claimed else None

    def owns(self, job, token):
        """See ITaskService."""
        return job._status == PROCESSING and len(job.attempts) == token

    @staticmethod
    def claimToken(job):
        """See ITaskService."""
        return len(job.attempts)

    def run(self, job, now=None, reporter=None, cancelled=None):
        """See ITaskService."""
        if job._status != PROCESSING:
            raise InvalidStatusError('job %s is %r, not processing: claim it '
                                     'first' % (job.id, job._status))
        task = self._getTask(job.task)
        if task is None:
            return self._fail(job, 'unknown task %r' % job.task, None, now)
        # What the end of the run writes: loaded while the task runs.
        ends = (self._index[PROCESSING], self._counts[PROCESSING],
                self._index[COMPLETED], self._counts[COMPLETED])
        load = prefetcher(self._p_jar)
        if load:
            load(ends)
        if now is None:
            # A job claimed with others starts when its run does, not at
            # the claim (a given ``now`` is the end: keep the claim's).
            # Recorded when it ends (``_settle``): a change now would make
            # the savepoint below write the job to a temporary file.
            job._v_begun = time.time()
        events.notify(events.JobStarted(job, self))
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
                _warm(load, *(leaves(self._index[PROCESSING], [job.id])
                              + leaves(self._index[COMPLETED], [job.id])))
        except TransientError:
            raise
        except Retry as e:
            _rollback(savepoint)
            delay = e.delay
            if delay is None:
                delay = retryDelay(task, job.retries + 1)
            return self._retry(job, e.message or 'retry asked by the task',
                               delay, now)
        except (TaskError, InvalidInputError) as e:
            _rollback(savepoint)
            if isinstance(e, tuple(getattr(task, 'retry_on', ()))):
                return self._retry(job, str(e),
                                   retryDelay(task, job.retries + 1), now)
            return self._fail(job, str(e), None, now)
        except Exception as e:
            trace = tb_module.format_exc()
            _rollback(savepoint)
            log.error('job %s (task %r) failed:\n%s', job.id, job.task, trace)
            if isinstance(e, tuple(getattr(task, 'retry_on', ()))):
                return self._retry(job, _errorText(e),
                                   retryDelay(task, job.retries + 1), now,
                                   trace)
            return self._fail(job, _errorText(e), trace, now)
        return self._succeed(job, result, now)

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
        end = _now(now)
        record = dict(end=end, outcome=outcome, error=error)
        begun = getattr(job, '_v_begun', None)
        if begun is not None:
            del job._v_begun
            job.started = record['start'] = begun
        job.completed = end
        job._lease = None
        job._endAttempt(**record)
        return end

    def _succeed(self, job, result, now):
        end = self._settle(job, now, COMPLETED)
        job.output = result
        if isinstance(job, CronJob):
            job.error = job.traceback = None
            job.starts = 0
            self._transition(job, CRONJOB, job.timeOfNextCall(end))
        else:
            self._transition(job, COMPLETED)
        events.notify(events.JobCompleted(job, self))
        return job._status

    def _fail(self, job, error, trace, now):
        end = self._settle(job, now, ERROR, error)
        job.error = error
        job.traceback = trace
        if isinstance(job, CronJob):
            job.starts = 0
            self._transition(job, CRONJOB, job.timeOfNextCall(end))
        else:
            self._transition(job, ERROR)
        events.notify(events.JobFailed(job, self))
        return ERROR

    def _retry(self, job, message, delay, now, trace=None):
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
            claimed = self.claim(due)
            if not claimed:
                break
            self.run(claimed[0], now)

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

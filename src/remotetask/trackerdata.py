"""The persistent side of the ATP tracker facade (``remotetask.tracker``).

A tracker task is an ordinary job of the service running the ``ITask``
named ``remotetask.tracker``; what the ATP API knows on top of the job lives
in one ``TrackerData`` object kept on the service itself (attribute
``_tracker``).  Kept on the service rather than at the database root, the
data goes wherever the service goes (a root key other than ``tasks``, a
folder of a Zope site), is found from the service alone (all an ``ITask``,
an ``IServiceMaintenance`` utility or an event subscriber is given) and is
deleted with it.  The service object is written once, when the data is
created.

``TrackerData`` holds three BTrees, so adding a task or changing one writes
a few buckets, never the whole structure:

- ``types``: type identifier -> ``TaskType`` (handler, timeout, timeret,
  maxstart);
- ``index``: ``(type, identifier)`` -> job id (unique per type);
- ``records``: job id -> ``Record`` (type, identifier, ATP code, times).
  A record keeps its ``Log`` and its ``Response`` in persistent objects of
  their own: appending to the log or storing a response does not rewrite
  the record, and two transactions appending to one log are merged by
  ``resolveLog`` instead of conflicting.

The ATP status of a task is derived from its job (the one source of truth)
and refined by the record (see ``atpStatus`` and ``tracker.txt``).

The functions below are the tracker's transitions.  Each runs in the
caller's transaction on a service and its data; ``remotetask.tracker``
wraps them in transactions of their own.  They use the service's internal
transition methods (``_begin``, ``_settle``, ``_succeed``, ``_fail``,
``_transition``, ``_forget``): the service has no public method to claim one
given job or to end a claimed job from outside ``run()``; they are gathered
in the "bridge" section so that they can be swapped for public ones.
"""
import time

import persistent
import zope.interface
from BTrees.LOBTree import LOBTree
from BTrees.OOBTree import OOBTree
from ZODB.POSException import ConflictError

from remotetask.interfaces import (
    CANCELLED, COMPLETED, DELAYED, ERROR, FINAL_STATUSES, PROCESSING, QUEUED,
    STARTLATER, WAITING_STATUSES, IServiceMaintenance, InvalidStatusError,
    JobNotFoundError, RemoteTaskError)
from remotetask.structures import intersect

UNDEFINED, ACCEPTED, SCHEDULED, RUNNING, PAUSED, FINISHED, FAILED = range(7)
STATUS2TEXT = {0: 'UNDEFINED', 1: 'ACCEPTED', 2: 'SCHEDULED', 3: 'RUNNING',
               4: 'PAUSED', 5: 'FINISHED', 6: 'FAILED'}
STATUS2COLOR = {0: 'magenta', 1: 'brown', 2: 'darkcyan', 3: 'green',
                4: 'maroon', 5: 'blue', 6: 'red'}
TEXT2STATUS = {text: code for code, text in STATUS2TEXT.items()}
#: ATP codes of a task a worker holds (its job is ``processing``).
ACTIVE = (SCHEDULED, RUNNING, PAUSED)
#: ATP codes of an ended task.
ENDED = (FINISHED, FAILED)

#: The name of the one ITask utility running every tracker task.
TASK_NAME = 'remotetask.tracker'
#: The attribute of the service holding the TrackerData.
ATTRIBUTE = '_tracker'


# -- Exceptions --------------------------------------------------------------

class TrackerError(RemoteTaskError):
    """The root of the errors of the tracker facade."""


class NotConfiguredError(TrackerError, RuntimeError):
    """A facade function was called before ``tracker.configure(db)``."""


class TaskTypeNotFound(TrackerError, KeyError):
    """No task type is registered under the identifier asked for."""

    def __str__(self):
        return str(self.args[0]) if self.args else 'task type not found'


class TaskTypeInUse(TrackerError):
    """``unregisterTaskType`` without ``force`` while the type has tasks
    (EOxServer raised Django's ``ProtectedError``)."""


class TaskNotFound(TrackerError, JobNotFoundError):
    """No tracker task has the id, or the (type, identifier), asked for."""


class DuplicateTask(TrackerError, ValueError):
    """``enqueueTask`` with an identifier its type already has."""


class NoResponse(TrackerError, LookupError):
    """``getTaskResponse`` of a task that stored no response."""


class QueueException(TrackerError):
    """Task queue base exception."""


class QueueEmpty(QueueException):
    """The task queue is empty and no task can be pulled from it."""


class QueueFull(QueueException):
    """The task queue is full and no task can be pushed to it."""


# -- Persistent data ---------------------------------------------------------

class TaskType(persistent.Persistent):
    """A registered task type (EOxServer's ``Type``)."""

    def __init__(self, identifier, handler, timeout, timeret, maxstart):
        self.identifier = identifier
        self.update(handler, timeout, timeret, maxstart)

    def update(self, handler, timeout, timeret, maxstart):
        self.handler = handler
        self.timeout = timeout
        self.timeret = timeret
        self.maxstart = maxstart

    def __repr__(self):
        return '<TaskType %r>' % self.identifier


class Response(persistent.Persistent):
    """The response of a task and its MIME type (replaced, never changed)."""

    def __init__(self, response, mimeType):
        self.response = response
        self.mimeType = mimeType


def resolveLog(old, committed, new):
    """Merge two transactions' appends to one log (pure function of the
    three states).  Both must have only appended to ``old``'s entries; the
    entries both appended are merged in time order (the committed ones first
    on a tie).  Anything else is a real conflict."""
    base = old.get('entries', ())
    ours = committed.get('entries', ())
    theirs = new.get('entries', ())
    if ours[:len(base)] != base or theirs[:len(base)] != base:
        raise ConflictError('log entries were changed, not appended')
    added = sorted(ours[len(base):] + theirs[len(base):], key=lambda e: e[0])
    state = dict(new)
    state['entries'] = base + tuple(added)
    return state


class Log(persistent.Persistent):
    """The status log of a task: a tuple of ``(time, code, message)``,
    oldest first, replaced on each append."""

    entries = ()

    def append(self, when, code, message):
        self.entries = self.entries + ((when, code, message or ''),)

    def _p_resolveConflict(self, old, committed, new):
        return resolveLog(old, committed, new)


_MISSING = object()
_STATUS_KEYS = ('code', 'updated')


def _same(a, b):
    try:
        return a is b or bool(a == b)
    except Exception:  # persistent references that can not be compared
        return False


def resolveRecord(old, committed, new):
    """Merge two transactions' changes to one record (pure function of the
    three states): each keeps the attributes only it changed; when both
    changed the status, the later status (by ``updated``) wins, as it would
    have if they had run one after the other.  Both changing another
    attribute (the response) differently is a real conflict.  So a status
    set from outside (``pauseTask``) while a worker ends the task does not
    make the worker run the handler again."""
    result = dict(committed)
    for key in (set(old) | set(committed) | set(new)) - set(_STATUS_KEYS):
        o, c, n = (state.get(key, _MISSING) for state in (old, committed,
                                                          new))
        if _same(n, o) or _same(n, c):
            continue
        if not _same(c, o):
            raise ConflictError('both changed the %r of a tracker record'
                                % key)
        if n is _MISSING:
            result.pop(key, None)
        else:
            result[key] = n
    if (new.get('updated') or 0) >= (committed.get('updated') or 0):
        for key in _STATUS_KEYS:
            if key in new:
                result[key] = new[key]
    return result


class Record(persistent.Persistent):
    """What the tracker knows of one task on top of its job."""

    code = ACCEPTED
    response = None

    def _p_resolveConflict(self, old, committed, new):
        return resolveRecord(old, committed, new)

    def __init__(self, jobid, type, identifier, now):
        self.jobid = jobid
        self.type = type
        self.identifier = identifier
        self.inserted = self.updated = now
        self.log = Log()

    def __repr__(self):
        return '<Record %s %s/%s>' % (self.jobid, self.type, self.identifier)


class TrackerData(persistent.Persistent):
    """Task types, records and the (type, identifier) index."""

    def __init__(self):
        self.types = OOBTree()
        self.index = OOBTree()
        self.records = LOBTree()

    def keysOfType(self, type):
        """The ``(type, identifier)`` index keys of the type's tasks."""
        return self.index.keys(min=(type,), max=(type + '\x00',),
                               excludemax=True)


def getData(service, create=False):
    """The tracker data of ``service`` (None if missing and not ``create``)."""
    data = getattr(service, ATTRIBUTE, None)
    if data is None and create:
        data = TrackerData()
        setattr(service, ATTRIBUTE, data)
    return data


# -- Statuses ----------------------------------------------------------------

#: How a worker running a handler shows RUNNING or PAUSED at once: as the
#: job's progress message, which the worker commits on its own (the record
#: is written in the job's transaction, seen by others when it ends).
PROGRESS = 'ATP %s'


def progressStatus(job):
    """``(code, time)`` of the ATP status a running handler reported as
    the job's progress, or None."""
    message = job.progress[1] or ''
    if not message.startswith('ATP '):
        return None
    code = TEXT2STATUS.get(message[4:].split(':', 1)[0])
    if code not in ACTIVE:
        return None
    progress = job._progress
    return code, getattr(progress, 'updated', None) or 0


def atpStatus(job, record):
    """The ATP code of a task: its job says where it is; for a processing
    job, the record or the job's progress (the later one) says which of
    SCHEDULED, RUNNING and PAUSED it is."""
    status = job.status
    if status in WAITING_STATUSES or status == STARTLATER:
        return ACCEPTED
    if status == PROCESSING:
        live = progressStatus(job)
        if record.code in ACTIVE and (live is None
                                      or record.updated >= live[1]):
            return record.code
        return SCHEDULED if live is None else live[0]
    if status == COMPLETED:
        return FINISHED
    return FAILED  # error, cancelled


def logStatus(record, code, message, now):
    """Record a status change in the record and its log."""
    record.code = code
    record.updated = now
    record.log.append(now, code, message)


def describe(record):
    return 'task %s (%s/%s)' % (record.jobid, record.type, record.identifier)


# -- Lookups -----------------------------------------------------------------

def getType(data, type):
    ttype = data.types.get(type) if data is not None else None
    if ttype is None:
        raise TaskTypeNotFound('no task type %r is registered' % (type,))
    return ttype


def findTask(service, data, task_id):
    """``(job, record)`` of the task with id ``task_id``."""
    try:
        record = data.records.get(task_id) if data is not None else None
    except TypeError:
        record = None
    if record is None:
        raise TaskNotFound('no tracker task with id %r' % (task_id,))
    job = service.jobs.get(task_id)
    if job is None:
        raise TaskNotFound('%s has no job any more (deleted through the '
                           'service API)' % describe(record))
    return job, record


def findByIdentifier(service, data, type, identifier):
    """``(job, record)`` of the task ``identifier`` of type ``type``."""
    getType(data, type)
    jobid = data.index.get((type, identifier))
    if jobid is None:
        raise TaskNotFound('no task %r of type %r' % (identifier, type))
    return findTask(service, data, jobid)


def queueSize(service, data):
    """The number of ACCEPTED tracker tasks (their jobs wait in the queue)."""
    if data is None:
        return 0
    return sum(len(intersect(data.records, service.jobIds(status)))
               for status in (QUEUED, DELAYED, STARTLATER))


# -- The bridge to the service's transitions ---------------------------------

def _claim(service, job, now, worker):
    """Claim one given waiting job (as ``service.claim`` does)."""
    if job.status == STARTLATER:
        service._transition(job, QUEUED, now)
    service._begin(job, now, worker, None)


def _requeue(service, job, now, reason):
    if job.status == PROCESSING:
        service._settle(job, now, 'reenqueued', reason)
    if job.status not in (QUEUED, DELAYED):
        service._transition(job, QUEUED, now)


def _end(service, job, ok, error, result, now):
    if job.status in WAITING_STATUSES or job.status == STARTLATER:
        _claim(service, job, now, None)
    if job.status == PROCESSING:
        if ok:
            service._succeed(job, result, now)
        else:
            service._fail(job, error, None, now)
        return
    # Already final: EOxServer lets an ended task change its end.
    job.completed = now
    job.output = result if ok else None
    job.error = None if ok else error
    job.traceback = None
    target = COMPLETED if ok else ERROR
    if job.status != target:
        service._transition(job, target)


def _delete(service, job, force):
    if job.status == PROCESSING:
        if not force:
            raise InvalidStatusError('it is processing')
        service._forget(job)
    else:
        service.delete(job.id)


# -- Transitions -------------------------------------------------------------

def logStart(record, job):
    """Log a worker's start of the task's job: SCHEDULED, then RUNNING."""
    who = 'worker %s' % job.worker if job.worker else 'in-process'
    logStatus(record, SCHEDULED, 'dequeued (%s, start %d)'
              % (who, job.starts), job.started)
    logStatus(record, RUNNING, '', job.started)


def logUnseenStart(job, record):
    """Before a task that a worker runs is ended or re-enqueued from another
    transaction: the worker logs its start in the transaction of the run,
    which will be dropped (its claim is lost), so log the start here for
    the history to show it.  (A start by ``dequeueTask`` is logged
    already: the record is SCHEDULED, RUNNING or PAUSED then.)"""
    if job.status == PROCESSING and record.code not in ACTIVE \
            and job.started is not None:
        logStart(record, job)


def reenqueue(service, job, record, now, message='', restart=True):
    """Put a task back in the queue, ACCEPTED.  ``restart``: a fresh start
    count (a manual re-enqueue) rather than keeping it (a zombie)."""
    logUnseenStart(job, record)
    _requeue(service, job, now, message or 're-enqueued')
    if restart:
        job.starts = 0
    logStatus(record, ACCEPTED, message, now)


def activate(service, job, record, code, now, message='', worker=None,
             what='start', claim=False):
    """Make a task SCHEDULED, RUNNING or PAUSED.  It must be one of these,
    or ACCEPTED with ``claim``: then its job is claimed (by ``worker``)."""
    current = atpStatus(job, record)
    if current == ACCEPTED and claim:
        _claim(service, job, now, worker)
    elif current not in ACTIVE:
        raise InvalidStatusError('can not %s %s: it is %s (re-enqueue it '
                                 'first)' % (what, describe(record),
                                             STATUS2TEXT[current]))
    logStatus(record, code, message, now)


def finish(service, job, record, code, now, message=''):
    """End a task FINISHED or FAILED (its job ``completed`` or ``error``).
    Logged before the job ends, so the event subscribers log nothing more."""
    logUnseenStart(job, record)
    logStatus(record, code, message, now)
    if code == FINISHED:
        result = record.response.response if record.response else None
        _end(service, job, True, None, result, now)
    else:
        _end(service, job, False, message or 'failed', None, now)


def delete(service, data, job, record, force=False):
    """Delete a task: its job, record and index entry."""
    if job is not None:
        try:
            _delete(service, job, force)
        except InvalidStatusError:
            raise InvalidStatusError(
                'can not delete %s: it is %s (stop it first)' % (
                    describe(record),
                    STATUS2TEXT[atpStatus(job, record)])) from None
    dropRecord(data, record)


def dropRecord(data, record):
    del data.records[record.jobid]
    key = (record.type, record.identifier)
    if data.index.get(key) == record.jobid:
        del data.index[key]


def reenqueueZombies(service, data, now, message=''):
    """See ``tracker.reenqueueZombieTasks``; return the ids handled."""
    handled = []
    if data is None:
        return handled
    for jobid in list(intersect(data.records, service.jobIds(PROCESSING))):
        job, record = service.jobs[jobid], data.records[jobid]
        ttype = data.types.get(record.type)
        if ttype is None or job.started is None \
                or now - job.started <= ttype.timeout:
            continue
        if job.starts >= ttype.maxstart:
            reason = ('abandoned: not ended within %gs, started %d times, '
                      'the maximum of type %r' % (ttype.timeout, job.starts,
                                                  record.type))
            finish(service, job, record, FAILED, now,
                   '%s: %s' % (message, reason) if message else reason)
        else:
            reason = ('zombie re-enqueued: not ended within %gs (start %d '
                      'of %d)' % (ttype.timeout, job.starts, ttype.maxstart))
            reenqueue(service, job, record, now,
                      '%s: %s' % (message, reason) if message else reason,
                      restart=False)
        handled.append(jobid)
    return handled


def deleteRetired(service, data, now):
    """See ``tracker.deleteRetiredTasks``; return the ids deleted."""
    deleted = []
    if data is None:
        return deleted
    for status in FINAL_STATUSES:
        for jobid in list(intersect(data.records, service.jobIds(status))):
            job, record = service.jobs[jobid], data.records[jobid]
            ttype = data.types.get(record.type)
            if ttype is None or ttype.timeret <= 0:
                continue
            ended = max(job.completed or 0, record.updated or 0)
            if now - ended > ttype.timeret:
                delete(service, data, job, record)
                deleted.append(jobid)
    # Records whose job was removed through the service API (clean, delete).
    for jobid in [i for i in data.records.keys() if i not in service.jobs]:
        dropRecord(data, data.records[jobid])
        deleted.append(jobid)
    return sorted(deleted)


# -- Maintenance and event subscribers ---------------------------------------

#: Longest time between two searches for retired tasks by the maintenance.
RETIRE_INTERVAL = 60.0


@zope.interface.implementer(IServiceMaintenance)
class TrackerMaintenance:
    """See IServiceMaintenance: re-enqueue zombies (each time: they are
    among the few processing jobs), delete retired tasks (which looks at
    every ended tracker task: at most every ``RETIRE_INTERVAL`` seconds, or
    the shortest positive ``timeret`` if shorter, per process and
    service)."""

    def __init__(self):
        self._next = {}

    def __call__(self, service, now):
        data = getData(service)
        if data is None:
            return
        reenqueueZombies(service, data, now, 'maintenance')
        key = (id(service._p_jar.db()) if service._p_jar else None,
               service._p_oid or id(service))
        due, last = self._next.get(key, (None, None))
        if due is None or now >= due or now < last:
            deleteRetired(service, data, now)
            keep = [t.timeret for t in data.types.values() if t.timeret > 0]
            self._next[key] = (now + min(keep + [RETIRE_INTERVAL]), now)


def _record(event):
    job = event.job
    if getattr(job, 'task', None) != TASK_NAME:
        return None
    data = getData(event.service)
    return None if data is None else data.records.get(job.id)


def onJobStarted(event):
    """A worker runs a tracker job: SCHEDULED, then RUNNING, logged before
    the task's savepoint (they stay when the handler fails)."""
    record = _record(event)
    if record is not None:
        job = event.job
        if record.code in ENDED:  # retried through the service API
            logStatus(record, ACCEPTED, 're-enqueued through the service',
                      job.started)
        logStart(record, job)


def onJobEnded(event):
    """A tracker job ended (or was cancelled) through the service."""
    record = _record(event)
    if record is None:
        return
    job = event.job
    code = FINISHED if job.status == COMPLETED else FAILED
    if record.code == code:
        return  # the facade logged it already
    if job.status == CANCELLED:
        message, when = 'cancelled', time.time()
    elif code == FINISHED:
        message = getattr(record, '_v_finish_message', '')
        when = job.completed
    else:
        message, when = job.error or '', job.completed
    logStatus(record, code, message, when)


"""EOxServer's ATP process-tracker API, as a facade over the task service.

EOxServer applications run with their import line changed from
``eoxserver.resources.processes.tracker`` to ``remotetask.tracker`` and a
``configure(db)`` call at start-up; ``tracker.txt`` is the tutorial.

- A tracker task is an ordinary job of the service: it runs the one
  ``ITask`` utility named ``remotetask.tracker``, which imports the task
  type's handler by its dotted path and calls ``handler(TaskStatus(task_id),
  input)``.  The task id is the job id; the service API, the command line
  and the web service see the job.  ``remotetask worker --import
  remotetask.tracker`` is an ATP daemon.
- What the ATP API knows on top of the job (types, identifiers, status log,
  response) is kept by ``remotetask.trackerdata``, where the mapping of the
  ATP status codes onto the service's statuses is defined.
- Each facade call runs in a transaction of its own on a connection of its
  own, and commits, retrying conflicts (as EOxServer's Django autocommit
  did): another process sees its effect at once.  Called from inside a
  running job (a handler), a facade call joins that job's transaction
  instead, so it commits (or rolls back) with the job.
- The ATPD functions (``dequeueTask``, ``startTask``, ``stopTask*``...) work
  for an external EOxServer-style ATPD loop too.
"""
import contextvars
import importlib
import time

import ZODB
import zope.component
import zope.component.event  # noqa: F401  zope.event -> component handlers
from transaction.interfaces import TransientError

from remotetask import db as dbmod
from remotetask import interfaces
from remotetask.interfaces import DELAYED, FINAL_STATUSES, QUEUED, TaskError
from remotetask.job import currentJob
from remotetask.service import checkPicklable
from remotetask.task import TaskBase
from remotetask.structures import intersect
from remotetask.trackerdata import (  # noqa: F401  re-exported
    ACCEPTED, FAILED, FINISHED, PAUSED, RUNNING, SCHEDULED, STATUS2COLOR,
    STATUS2TEXT, TASK_NAME, TEXT2STATUS, UNDEFINED, DuplicateTask,
    NoResponse, NotConfiguredError, QueueEmpty, QueueException, QueueFull,
    Record, TaskNotFound, TaskType, TaskTypeInUse, TaskTypeNotFound,
    TrackerError, TrackerMaintenance, activate, atpStatus, findByIdentifier,
    findTask, finish, getData, getType, logStatus, queueSize, reenqueue)
from remotetask import trackerdata

__all__ = [
    # the seed API (eoxserver.resources.processes.tracker and .models)
    'registerTaskType', 'unregisterTaskType', 'getQueueSize',
    'getMaxQueueSize', 'MAX_QUEUE_SIZE', 'getTaskInfo', 'getTaskIdentifier',
    'getTaskStatus', 'getTaskStatusByIdentifier', 'deleteTask',
    'deleteTaskByIdentifier', 'enqueueTask', 'reenqueueTask', 'dequeueTask',
    'startTask', 'stopTaskSuccessIfNotFinished', 'stopTaskSuccess',
    'stopTaskFailure', 'pauseTask', 'resumeTask', 'setTaskResponse',
    'getTaskResponse', 'getTaskLog', 'reenqueueZombieTasks',
    'deleteRetiredTasks', 'dummyHandler', 'TaskStatus', 'DummyLock',
    'dbLocker', 'QueueException', 'QueueEmpty', 'QueueFull', 'STATUS2TEXT',
    'TEXT2STATUS', 'STATUS2COLOR',
    # remotetask's additions
    'configure', 'unconfigure', 'TrackerError', 'NotConfiguredError',
    'TaskTypeNotFound', 'TaskTypeInUse', 'TaskNotFound', 'DuplicateTask',
    'NoResponse',
]

#: Actual queue size limit (may be changed, or set by ``configure``).
#: ``getMaxQueueSize()`` reads it at each call.
MAX_QUEUE_SIZE = 64


class _Config:
    def __init__(self, database, runner, owned):
        self.db = database
        self.runner = runner
        self.owned = owned


_config = None
_clock = time.time


def configure(db, service=dbmod.DEFAULT_SERVICE, maxQueueSize=None,
              clock=None):
    """Point the facade at the service ``service`` of ``db`` (a ``ZODB.DB``
    or a zodburi URI string, opened here; a FileStorage is opened through
    the local process that serves it, or served by this one to the others:
    ``remotetask.embedded``); return the ``DB``.

    ``maxQueueSize`` sets ``MAX_QUEUE_SIZE``; ``clock`` (a function
    returning epoch seconds, default ``time.time``) is the facade's time.
    Registers the tracker's task, maintenance and event handlers.
    """
    global _config, _clock, MAX_QUEUE_SIZE
    if isinstance(db, str):
        # A FileStorage is shared with the local workers (embedded ZEO).
        database, owned = dbmod.openDB(db, share=True), True
    elif isinstance(db, ZODB.DB):
        database, owned = db, False
    else:
        raise TypeError('configure() needs a ZODB.DB or a database URI, '
                        'not %r' % (db,))
    if maxQueueSize is not None:
        if not isinstance(maxQueueSize, int) or maxQueueSize < 1:
            raise ValueError('maxQueueSize must be a positive integer, not '
                             '%r' % (maxQueueSize,))
        MAX_QUEUE_SIZE = maxQueueSize
    unconfigure()
    register()
    _config = _Config(database, dbmod.ServiceRunner(database, service),
                      owned)
    _clock = clock or time.time
    return database


def unconfigure():
    """Forget the configuration (closing the database if configure opened
    it) and restore the clock."""
    global _config, _clock
    if _config is not None and _config.owned:
        _config.db.close()
    _config = None
    _clock = time.time


def _run(func, *args):
    """``func(service, data, now, *args)`` in the running job's transaction,
    or else in a transaction of its own that commits."""
    context = currentJob()
    if context is not None:
        service = context.service
        return func(service, getData(service), _clock(), *args)
    if _config is None:
        raise NotConfiguredError(
            'remotetask.tracker is not configured: call '
            'remotetask.tracker.configure(db_or_uri) first')
    return _config.runner(
        lambda service: func(service, getData(service), _clock(), *args))


def _write(func):
    """Like ``_run`` but creates the tracker data if missing."""
    def call(service, data, now, *args):
        return func(service, getData(service, create=True), now, *args)
    return call


# -- Task types --------------------------------------------------------------

def _checkHandler(handler):
    if callable(handler) and not isinstance(handler, str):
        qualname = getattr(handler, '__qualname__', '')
        if '<' in qualname or not getattr(handler, '__module__', None):
            raise ValueError('handler %r has no importable dotted path; give '
                             'it as "package.module.function"' % (handler,))
        handler = '%s.%s' % (handler.__module__, qualname)
    if not isinstance(handler, str) or '.' not in handler.strip('.') \
            or not all(p.isidentifier() for p in handler.split('.')):
        raise ValueError('handler must be a dotted path like '
                         '"package.module.function", not %r' % (handler,))
    return handler


def registerTaskType(identifier, handler, timeout=3600, timeret=-1,
                     maxrestart=2):
    """Register a task type, or update it when called again.

    ``handler``: the dotted path of ``handler(taskStatus, input)``, imported
    by the worker.  ``timeout``: seconds after its dequeueing after which an
    unfinished task is a zombie, re-enqueued.  ``timeret``: seconds an ended
    task is kept (non-positive: forever).  ``maxrestart``: re-enqueues
    allowed; a task started ``1 + maxrestart`` times that times out again
    ends FAILED.
    """
    if not isinstance(identifier, str) or not identifier:
        raise ValueError('a task type identifier must be a non-empty '
                         'string, not %r' % (identifier,))
    handler = _checkHandler(handler)
    try:
        timeout, timeret = float(timeout), float(timeret)
    except (TypeError, ValueError):
        raise ValueError('timeout and timeret must be numbers of seconds, '
                         'not %r, %r' % (timeout, timeret)) from None
    if timeout <= 0:
        raise ValueError('timeout must be positive, not %r' % timeout)
    if not isinstance(maxrestart, int) or maxrestart < 0:
        raise ValueError('maxrestart must be an integer >= 0, not %r'
                         % (maxrestart,))
    _run(_write(_registerTaskType), identifier, handler, timeout, timeret,
         maxrestart + 1)


def _registerTaskType(service, data, now, identifier, handler, timeout,
                      timeret, maxstart):
    ttype = data.types.get(identifier)
    if ttype is None:
        data.types[identifier] = TaskType(identifier, handler, timeout,
                                          timeret, maxstart)
        return
    changed = ttype.maxstart != maxstart
    ttype.update(handler, timeout, timeret, maxstart)
    for key in data.keysOfType(identifier) if changed else ():
        # the start limit the reaper applies (lease expired)
        job = service.jobs.get(data.index[key])
        if job is not None and job.status not in FINAL_STATUSES \
                and job.max_starts != maxstart:
            job.max_starts = maxstart


def unregisterTaskType(identifier, force=False):
    """Remove a task type.  Refused with ``TaskTypeInUse`` while the type
    has tasks, unless ``force``: then its tasks are deleted too."""
    _run(_write(_unregisterTaskType), identifier, force)


def _unregisterTaskType(service, data, now, identifier, force):
    getType(data, identifier)
    keys = list(data.keysOfType(identifier))
    if keys and not force:
        raise TaskTypeInUse('task type %r has %d task(s); delete them first '
                            'or use force=True' % (identifier, len(keys)))
    for key in keys:
        record = data.records[data.index[key]]
        trackerdata.delete(service, data, service.jobs.get(record.jobid),
                           record, force=True)
    del data.types[identifier]


# -- Queue -------------------------------------------------------------------

def getQueueSize():
    """The number of enqueued (ACCEPTED) tasks."""
    return _run(lambda service, data, now: queueSize(service, data))


def getMaxQueueSize():
    """The maximum number of tasks the queue may hold (``MAX_QUEUE_SIZE``)."""
    return MAX_QUEUE_SIZE


def enqueueTask(type, identifier, input, message=''):
    """Create task ``identifier`` of type ``type`` with ``input`` (anything
    picklable), ACCEPTED; return its task id.

    :raises QueueFull: when ``MAX_QUEUE_SIZE`` tasks are enqueued (advisory:
        concurrent producers may overshoot it by one each, as in EOxServer).
    :raises DuplicateTask: if the type has a task with this identifier.
    :raises TaskTypeNotFound: for an unregistered type.
    """
    if not isinstance(identifier, str) or not identifier:
        raise ValueError('a task identifier must be a non-empty string, '
                         'not %r' % (identifier,))
    return _run(_write(_enqueueTask), type, identifier, input, message)


def _enqueueTask(service, data, now, type, identifier, input, message):
    ttype = getType(data, type)
    jobid = data.index.get((type, identifier))
    if jobid is not None:
        record = data.records.get(jobid)
        if record is not None and jobid in service.jobs:
            raise DuplicateTask('task type %r already has a task %r (task '
                                '%s)' % (type, identifier, jobid))
        if record is not None:  # its job was removed through the service
            trackerdata.dropRecord(data, record)
    size = queueSize(service, data)
    if size >= MAX_QUEUE_SIZE:
        raise QueueFull('the task queue is full (%d of %d tasks)'
                        % (size, MAX_QUEUE_SIZE))
    jobid = service.add(TASK_NAME, input, max_starts=ttype.maxstart,
                        meta={'tracker': (type, identifier)}, now=now)
    record = data.records[jobid] = Record(jobid, type, identifier, now)
    data.index[(type, identifier)] = jobid
    logStatus(record, ACCEPTED, message, now)
    return jobid


def reenqueueTask(task_id, message=''):
    """Enqueue a task again, ACCEPTED, whatever its status (even beyond
    ``MAX_QUEUE_SIZE``), with a fresh start count."""
    _run(_byId(reenqueue), task_id, message)


def dequeueTask(serverID, message=''):
    """Pull a task from the queue for the ATPD ``serverID``: a list of the
    ids of the tasks now SCHEDULED (one here).

    :raises QueueEmpty: when no tracker task is due.
    """
    return _run(_dequeueTask, serverID, message)


def _dequeueTask(service, data, now, serverID, message):
    if data is not None:
        # The due tracker tasks, first due first: the waiting tracker jobs
        # (an intersection of id sets, in C) sorted by (eta, id), rather
        # than a walk of the whole queue past other tasks' jobs.
        waiting = []
        for status in (QUEUED, DELAYED):
            for jobid in intersect(data.records, service.jobIds(status)):
                job = service.jobs.get(jobid)
                if job is not None and job.eta is not None \
                        and job.eta <= now:
                    waiting.append((job.eta, jobid, job))
        if waiting:
            eta, jobid, job = min(waiting, key=lambda e: e[:2])
            activate(service, job, data.records[jobid], SCHEDULED, now,
                     message, worker=serverID, what='dequeue', claim=True)
            return [jobid]
    raise QueueEmpty('no task in the queue')


def startTask(task_id, message=''):
    """Set a task RUNNING; return ``(type, identifier, handler, input)``."""
    return _run(_startTask, task_id, message)


def _startTask(service, data, now, task_id, message):
    job, record = findTask(service, data, task_id)
    activate(service, job, record, RUNNING, now, message, claim=True)
    return (record.type, record.identifier,
            getType(data, record.type).handler, job.input)


def _byId(transition):
    """A transaction function applying ``transition`` to one task."""
    def call(service, data, now, task_id, message=''):
        job, record = findTask(service, data, task_id)
        return transition(service, job, record, now=now, message=message)
    return call


def _active(code, what):
    def transition(service, job, record, now, message):
        activate(service, job, record, code, now, message, what=what)
    return transition


def pauseTask(task_id, message=''):
    """Set a SCHEDULED or RUNNING task PAUSED."""
    _check(task_id)
    _run(_byId(_active(PAUSED, 'pause')), task_id, message)
    _report(task_id, PAUSED, message)


def resumeTask(task_id, message=''):
    """Set a SCHEDULED or PAUSED task RUNNING."""
    _check(task_id)
    _run(_byId(_active(RUNNING, 'resume')), task_id, message)
    _report(task_id, RUNNING, message)


def _report(task_id, code, message=''):
    """In the worker's run of the task, show its status to others at once
    (see ``trackerdata.PROGRESS``)."""
    context = currentJob()
    if context is not None and context.jobid == task_id:
        text = trackerdata.PROGRESS % STATUS2TEXT[code]
        context.progress(None, '%s: %s' % (text, message) if message
                         else text)


# -- Ending tasks ------------------------------------------------------------
# Inside the worker's run of a task, its handler's final status is only
# noted (``_Run``): the tracker task applies it when the handler returns.

class _Run:
    def __init__(self, jobid):
        self.jobid = jobid
        self.final = None
        self.message = ''


_running = contextvars.ContextVar('remotetask_tracker_run', default=None)


def _intent(task_id):
    run = _running.get()
    return run if run is not None and run.jobid == task_id else None


def _check(task_id):
    if not isinstance(task_id, int) or isinstance(task_id, bool):
        raise TaskNotFound('a task id is an integer, not %r' % (task_id,))


def _stop(task_id, code, message, ifNotFinished):
    _check(task_id)
    run = _intent(task_id)
    if run is not None:
        if not (ifNotFinished and run.final is not None):
            run.final, run.message = code, message
        return
    _run(_stopTask, task_id, code, message, ifNotFinished)


def _stopTask(service, data, now, task_id, code, message, ifNotFinished):
    job, record = findTask(service, data, task_id)
    if ifNotFinished and atpStatus(job, record) in (FINISHED, FAILED):
        return
    finish(service, job, record, code, now, message)


def stopTaskSuccessIfNotFinished(task_id, message=''):
    """Set a task FINISHED unless it is FINISHED or FAILED already."""
    _stop(task_id, FINISHED, message, True)


def stopTaskSuccess(task_id, message=''):
    """Set a task FINISHED (its job ``completed``)."""
    _stop(task_id, FINISHED, message, False)


def stopTaskFailure(task_id, message=''):
    """Set a task FAILED (its job ``error``, with ``message``)."""
    _stop(task_id, FAILED, message, False)


def deleteTask(task_id):
    """Delete a task that is not being processed (SCHEDULED, RUNNING,
    PAUSED: stop it first)."""
    _run(_byId(_deleteTransition), task_id)


def deleteTaskByIdentifier(type, identifier):
    """Delete a task (see ``deleteTask``) by its type and identifier."""
    def call(service, data, now):
        job, record = findByIdentifier(service, data, type, identifier)
        trackerdata.delete(service, data, job, record)
    _run(call)


def _deleteTransition(service, job, record, now, message):
    trackerdata.delete(service, getData(service), job, record)


# -- Reading -----------------------------------------------------------------

def _status(job, record):
    run = _intent(record.jobid)
    code = run.final if run is not None and run.final else \
        atpStatus(job, record)
    return code, STATUS2TEXT[code]


def getTaskInfo(task_id):
    """``(type, identifier, status code, status text)`` of a task."""
    def call(service, data, now):
        job, record = findTask(service, data, task_id)
        return (record.type, record.identifier) + _status(job, record)
    return _run(call)


def getTaskIdentifier(task_id):
    """``(type, identifier)`` of a task."""
    def call(service, data, now):
        job, record = findTask(service, data, task_id)
        return record.type, record.identifier
    return _run(call)


def getTaskStatus(task_id):
    """``(status code, status text)`` of a task."""
    def call(service, data, now):
        return _status(*findTask(service, data, task_id))
    return _run(call)


def getTaskStatusByIdentifier(type, identifier):
    """``(status code, status text)`` of a task by type and identifier."""
    def call(service, data, now):
        return _status(*findByIdentifier(service, data, type, identifier))
    return _run(call)


def setTaskResponse(task_id, response, mimeType='text/xml'):
    """Store (or replace) the response of a task.

    :raises InvalidInputError: if the response can not be pickled.
    :raises ValueError: if ``mimeType`` is not a string.
    """
    if not isinstance(mimeType, str):
        raise ValueError('mimeType must be a string, not %r' % (mimeType,))
    checkPicklable(response, 'response')

    def call(service, data, now):
        job, record = findTask(service, data, task_id)
        record.response = trackerdata.Response(response, mimeType)
    _run(call)


def getTaskResponse(type, identifier):
    """``(response, mimeType)`` of a task.

    :raises NoResponse: if the task stored none.
    """
    def call(service, data, now):
        job, record = findByIdentifier(service, data, type, identifier)
        if record.response is None:
            raise NoResponse('%s has no response' % trackerdata.describe(
                record))
        return record.response.response, record.response.mimeType
    return _run(call)


def getTaskLog(type, identifier):
    """The log of a task, oldest first: ``[(time, (code, text), message)]``;
    ``time`` is a timezone-aware UTC ``datetime``."""
    def call(service, data, now):
        job, record = findByIdentifier(service, data, type, identifier)
        return list(record.log.entries)
    return [(_datetime(when), (code, STATUS2TEXT[code]), message)
            for when, code, message in _run(call)]


def _datetime(when):
    import datetime
    return datetime.datetime.fromtimestamp(when, datetime.timezone.utc)


# -- Clean-up ----------------------------------------------------------------

def reenqueueZombieTasks(message='', now=None):
    """Re-enqueue the tasks not ended ``timeout`` seconds after they were
    dequeued; those already started ``maxstart`` (1 + maxrestart) times end
    FAILED instead.  Return their ids.  The worker does this on its own."""
    return _run(lambda service, data, clock: trackerdata.reenqueueZombies(
        service, data, clock if now is None else now, message))


def deleteRetiredTasks(now=None):
    """Delete the FINISHED and FAILED tasks ended more than their type's
    ``timeret`` seconds ago (never for a non-positive ``timeret``).  Return
    their ids.  The worker does this on its own."""
    return _run(lambda service, data, clock: trackerdata.deleteRetired(
        service, data, clock if now is None else now))


# -- Handlers, locks ---------------------------------------------------------

def dummyHandler(taskStatus, input):
    """Dummy ATP handler: the prototype of one (does nothing).  A handler
    gets a ``TaskStatus`` and the task's input."""


class DummyLock:
    """Dummy (default) lock implementing the lock interface."""

    def acquire(self):
        pass

    def release(self):
        pass


def dbLocker(dbLock, func, *prm, **kprm):
    """Call ``func(*prm, **kprm)`` between ``dbLock.acquire()`` and
    ``dbLock.release()``; return what it returns."""
    dbLock.acquire()
    try:
        return func(*prm, **kprm)
    finally:
        dbLock.release()


class TaskStatus:
    """The task a handler runs (given to ``handler(taskStatus, input)``)."""

    UNDEFINED, ACCEPTED, SCHEDULED, RUNNING, PAUSED, FINISHED, FAILED = \
        range(7)

    def __init__(self, task_id):
        self.task_id = task_id

    def getInfo(self):
        return getTaskInfo(self.task_id)

    def getIdentifier(self):
        return getTaskIdentifier(self.task_id)

    def getStatus(self):
        return getTaskStatus(self.task_id)

    def setSuccess(self, message=''):
        stopTaskSuccess(self.task_id, message)

    def setFailure(self, message=''):
        stopTaskFailure(self.task_id, message)

    def setPaused(self, message=''):
        pauseTask(self.task_id, message)

    def setRunning(self, message=''):
        resumeTask(self.task_id, message)

    def storeResponse(self, response, mimeType='text/xml'):
        setTaskResponse(self.task_id, response, mimeType)

    def __repr__(self):
        return '<TaskStatus %r>' % (self.task_id,)


# -- The task the worker runs ------------------------------------------------

def importHandler(path):
    """The handler named by a dotted path (as EOxServer's ATPD loads it)."""
    module, _, name = path.rpartition('.')
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise TaskError('can not import the handler %r: %s' % (path, e))


class TrackerTask(TaskBase):
    """See ITask: runs a tracker task's handler.  A handler that sets no
    final status ends FINISHED; ``setFailure`` or an exception ends FAILED
    with the message.  Its response is the job's result."""

    max_retries = 0

    def __call__(self, service, jobid, input):
        data = getData(service)
        record = data.records.get(jobid) if data is not None else None
        if record is None:
            raise TaskError('job %s is not a tracker task' % jobid)
        try:
            ttype = getType(data, record.type)
        except TaskTypeNotFound as e:
            raise TaskError(str(e))
        handler = importHandler(ttype.handler)
        _report(jobid, RUNNING)
        run = _Run(jobid)
        token = _running.set(run)
        try:
            handler(TaskStatus(jobid), input)
        except TransientError:
            raise
        finally:
            _running.reset(token)
        if run.final == FAILED:
            raise TaskError(run.message or 'the handler reported a failure')
        record._v_finish_message = run.message
        return record.response.response if record.response else None


def register():
    """Register the tracker task, its maintenance and its event handlers
    (done on import; again after the component registry was cleaned)."""
    zope.component.provideUtility(TrackerTask(), interfaces.ITask,
                                  name=TASK_NAME)
    zope.component.provideUtility(TrackerMaintenance(),
                                  interfaces.IServiceMaintenance,
                                  name=TASK_NAME)
    registry = zope.component.getGlobalSiteManager()
    for handler, iface in _HANDLERS:
        registry.unregisterHandler(handler, (iface,))  # never twice
        registry.registerHandler(handler, (iface,))


#: Called by ``--import remotetask.tracker`` (the module registers on import,
#: but an import does nothing the second time).
registerTasks = register

_HANDLERS = ((trackerdata.onJobStarted, interfaces.IJobStarted),
             (trackerdata.onJobEnded, interfaces.IJobCompleted),
             (trackerdata.onJobEnded, interfaces.IJobFailed),
             (trackerdata.onJobEnded, interfaces.IJobCancelled))


register()

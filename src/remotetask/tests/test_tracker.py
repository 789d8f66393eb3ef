"""Tests of the ATP tracker facade (remotetask.tracker)."""
import datetime
import doctest
import os

import pytest
import transaction
import ZODB
import zope.component
from zope.interface.verify import verifyObject

from remotetask import interfaces, tracker, trackerdata
from remotetask.db import ServiceRunner, getService
from remotetask.interfaces import (
    COMPLETED, ERROR, PROCESSING, QUEUED, InvalidInputError,
    InvalidStatusError, JobNotFoundError)
from remotetask.task import SimpleTask

T0 = 1_700_000_000.0
H = 'remotetask.tests.trackerhandlers.'
SUM = 'remotetask.atpdemo.handler'


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock(T0)


@pytest.fixture
def db(clock):
    database = ZODB.DB(None)
    tracker.configure(database, clock=clock)
    yield database
    tracker.unconfigure()
    tracker.MAX_QUEUE_SIZE = 64
    database.close()


@pytest.fixture
def runner(db):
    return ServiceRunner(db)


def status(type, identifier):
    return tracker.getTaskStatusByIdentifier(type, identifier)[1]


def log(type, identifier):
    return [(rec[1][1], rec[2]) for rec in tracker.getTaskLog(type,
                                                              identifier)]


def test_atp_status_of_a_processing_job():
    class Job:
        status, progress, _progress = PROCESSING, (None, ''), None

    class Record:
        code, updated = tracker.ACCEPTED, 10.0

    class Progress:
        updated = 11.0

    atp = trackerdata.atpStatus
    assert atp(Job, Record) == tracker.SCHEDULED  # claimed by a worker
    Job.progress, Job._progress = (None, 'ATP PAUSED: waiting'), Progress
    assert atp(Job, Record) == tracker.PAUSED  # the worker reported it
    Record.code, Record.updated = tracker.RUNNING, 12.0
    assert atp(Job, Record) == tracker.RUNNING  # the record is later
    Record.updated = 10.5
    assert atp(Job, Record) == tracker.PAUSED  # the progress is later
    Job.progress = (None, 'ATP FINISHED')  # not a processing status
    assert atp(Job, Record) == tracker.RUNNING
    Job.progress = (None, '50% done')
    assert atp(Job, Record) == tracker.RUNNING
    for status, code in (('queued', 1), ('delayed', 1), ('start later', 1),
                         ('completed', 5), ('error', 6), ('cancelled', 6)):
        Job.status = status
        assert atp(Job, Record) == code


# -- Names and configuration -------------------------------------------------

def test_status_tables_match_the_seed():
    assert tracker.STATUS2TEXT == {
        0: 'UNDEFINED', 1: 'ACCEPTED', 2: 'SCHEDULED', 3: 'RUNNING',
        4: 'PAUSED', 5: 'FINISHED', 6: 'FAILED'}
    assert tracker.TEXT2STATUS == {v: k for k, v in
                                   tracker.STATUS2TEXT.items()}
    assert tracker.STATUS2COLOR[5] == 'blue'
    assert sorted(tracker.STATUS2COLOR) == list(range(7))
    for code, text in tracker.STATUS2TEXT.items():
        assert getattr(tracker.TaskStatus, text) == code
        assert getattr(tracker, text) == code
    assert tracker.MAX_QUEUE_SIZE == 64
    assert issubclass(tracker.QueueEmpty, tracker.QueueException)
    assert issubclass(tracker.QueueFull, tracker.QueueException)
    assert issubclass(tracker.QueueException, interfaces.RemoteTaskError)


SEED_NAMES = '''
registerTaskType unregisterTaskType getQueueSize getMaxQueueSize
MAX_QUEUE_SIZE getTaskInfo getTaskIdentifier getTaskStatus
getTaskStatusByIdentifier deleteTask deleteTaskByIdentifier enqueueTask
reenqueueTask dequeueTask startTask stopTaskSuccessIfNotFinished
stopTaskSuccess stopTaskFailure pauseTask resumeTask setTaskResponse
getTaskResponse getTaskLog reenqueueZombieTasks deleteRetiredTasks
dummyHandler TaskStatus DummyLock dbLocker QueueException QueueEmpty
QueueFull STATUS2TEXT TEXT2STATUS STATUS2COLOR'''.split()


def test_star_import_gives_the_seed_api():
    namespace = {}
    exec('from remotetask.tracker import *', namespace)
    assert set(SEED_NAMES) <= set(namespace)
    assert 'time' not in namespace and 'ZODB' not in namespace
    for name in ('getInfo', 'getIdentifier', 'getStatus', 'setSuccess',
                 'setFailure', 'setPaused', 'setRunning', 'storeResponse'):
        assert callable(getattr(tracker.TaskStatus, name))
    import inspect
    assert str(inspect.signature(tracker.registerTaskType)) == (
        '(identifier, handler, timeout=3600, timeret=-1, maxrestart=2)')
    assert str(inspect.signature(tracker.enqueueTask)) == (
        "(type, identifier, input, message='')")
    assert str(inspect.signature(tracker.setTaskResponse)) == (
        "(task_id, response, mimeType='text/xml')")
    assert str(inspect.signature(tracker.dbLocker)) == (
        '(dbLock, func, *prm, **kprm)')


def test_registered_components_provide_their_interfaces():
    tracker.register()
    task = zope.component.getUtility(interfaces.ITask,
                                     name='remotetask.tracker')
    assert verifyObject(interfaces.ITask, task)
    hook = zope.component.getUtility(interfaces.IServiceMaintenance,
                                     name='remotetask.tracker')
    assert verifyObject(interfaces.IServiceMaintenance, hook)
    tracker.register()  # twice: handlers are not doubled
    gsm = zope.component.getGlobalSiteManager()
    mine = [h for h in gsm.registeredHandlers()
            if h.factory is trackerdata.onJobStarted]
    assert len(mine) == 1


def test_calls_before_configure_are_refused():
    tracker.unconfigure()
    with pytest.raises(tracker.NotConfiguredError, match='configure'):
        tracker.getQueueSize()
    with pytest.raises(TypeError, match='ZODB.DB or a database URI'):
        tracker.configure(42)


def test_configure_with_an_uri(tmp_path):
    uri = 'file://%s' % (tmp_path / 'Data.fs')
    database = tracker.configure(uri, maxQueueSize=5)
    try:
        assert tracker.getMaxQueueSize() == 5
        tracker.registerTaskType('T', SUM)
        tracker.enqueueTask('T', 'a', [1])
        # committed: another connection sees it at once
        conn = database.open()
        assert len(getService(conn).jobs) == 1
        conn.close()
    finally:
        tracker.unconfigure()
        tracker.MAX_QUEUE_SIZE = 64
    with pytest.raises(ValueError, match='maxQueueSize'):
        tracker.configure(ZODB.DB(None), maxQueueSize=0)


def test_dummy_lock_and_dbLocker():
    calls = []

    class Lock:
        def acquire(self):
            calls.append('acquire')

        def release(self):
            calls.append('release')

    assert tracker.dbLocker(Lock(), lambda a, b=0: a + b, 1, b=2) == 3
    assert calls == ['acquire', 'release']
    with pytest.raises(ZeroDivisionError):
        tracker.dbLocker(Lock(), lambda: 1 / 0)
    assert calls[-1] == 'release'
    assert tracker.dbLocker(tracker.DummyLock(), len, 'abc') == 3
    assert tracker.dummyHandler(tracker.TaskStatus(1), None) is None


# -- Task types --------------------------------------------------------------

def test_register_update_and_unregister_types(db, runner):
    tracker.registerTaskType('T', SUM, 60, 600, 3)
    tracker.registerTaskType('T', H + 'silent', 10, -1, 0)  # an update
    ttype = runner(lambda s: trackerdata.getData(s).types['T'])
    assert (ttype.handler, ttype.timeout, ttype.timeret, ttype.maxstart) \
        == (H + 'silent', 10.0, -1.0, 1)
    from remotetask.tests.trackerhandlers import silent
    tracker.registerTaskType('U', silent)  # a function: its dotted path
    assert runner(lambda s: trackerdata.getData(s).types['U'].handler) \
        == H + 'silent'
    tracker.unregisterTaskType('U')
    with pytest.raises(tracker.TaskTypeNotFound, match="'U'"):
        tracker.unregisterTaskType('U')


@pytest.mark.parametrize('args, match', [
    (('', SUM), 'identifier'),
    (('T', 'nodots'), 'dotted path'),
    (('T', 'a b.c'), 'dotted path'),
    (('T', lambda s, i: None), 'importable'),
    (('T', SUM, 0), 'timeout must be positive'),
    (('T', SUM, 'soon'), 'numbers of seconds'),
    (('T', SUM, 60, 600, -1), 'maxrestart'),
])
def test_register_refuses_bad_arguments(db, runner, args, match):
    with pytest.raises(ValueError, match=match):
        tracker.registerTaskType(*args)
    assert runner(lambda s: trackerdata.getData(s)) is None


def test_unregister_with_instances(db, runner):
    tracker.registerTaskType('T', SUM)
    tracker.registerTaskType('Other', SUM)
    a = tracker.enqueueTask('T', 'a', [1])
    b = tracker.enqueueTask('T', 'b', [2])
    c = tracker.enqueueTask('Other', 'a', [3])
    assert tracker.dequeueTask('srv') == [a]
    with pytest.raises(tracker.TaskTypeInUse, match="'T' has 2 task"):
        tracker.unregisterTaskType('T')
    assert status('T', 'b') == 'ACCEPTED'
    tracker.unregisterTaskType('T', force=True)
    jobs = runner(lambda s: set(s.jobs))
    assert jobs == {c} and a not in jobs and b not in jobs
    with pytest.raises(tracker.TaskTypeNotFound):
        tracker.getTaskStatusByIdentifier('T', 'a')
    assert status('Other', 'a') == 'ACCEPTED'
    assert runner(lambda s: s.count(PROCESSING)) == 0


# -- Enqueueing --------------------------------------------------------------

def test_enqueue_makes_an_ordinary_job(db, runner):
    tracker.registerTaskType('SequenceSum', SUM, 60, 600, 3)
    task_id = tracker.enqueueTask('SequenceSum', 'Task001', (1, 2, 3),
                                  'hello')
    job = runner(lambda s: s.jobs[task_id])
    assert (job.task, job.input, job.status, job.max_starts) == (
        'remotetask.tracker', (1, 2, 3), QUEUED, 4)
    assert job.meta == {'tracker': ('SequenceSum', 'Task001')}
    assert tracker.getTaskInfo(task_id) == ('SequenceSum', 'Task001', 1,
                                            'ACCEPTED')
    assert tracker.getTaskIdentifier(task_id) == ('SequenceSum', 'Task001')
    assert tracker.getTaskStatus(task_id) == (1, 'ACCEPTED')
    assert tracker.getQueueSize() == 1
    assert tracker.getTaskLog('SequenceSum', 'Task001') == [
        (datetime.datetime.fromtimestamp(T0, datetime.timezone.utc),
         (1, 'ACCEPTED'), 'hello')]


def test_enqueue_errors(db, runner):
    tracker.registerTaskType('T', SUM)
    tracker.registerTaskType('U', SUM)
    with pytest.raises(tracker.TaskTypeNotFound, match="no task type 'X'"):
        tracker.enqueueTask('X', 'a', None)
    first = tracker.enqueueTask('T', 'a', None)
    with pytest.raises(tracker.DuplicateTask, match="'T' already has a "
                       "task 'a'"):
        tracker.enqueueTask('T', 'a', None)
    assert tracker.enqueueTask('U', 'a', None) != first  # other type: fine
    with pytest.raises(InvalidInputError):
        tracker.enqueueTask('T', 'b', lambda: None)
    with pytest.raises(ValueError, match='identifier'):
        tracker.enqueueTask('T', '', None)
    # nothing half-stored by the refused ones
    assert runner(lambda s: len(s.jobs)) == 2
    with pytest.raises(tracker.TaskNotFound):
        tracker.getTaskStatusByIdentifier('T', 'b')
    assert tracker.getQueueSize() == 2


def test_queue_full_and_reenqueue_beyond_it(db):
    tracker.configure(db, maxQueueSize=2, clock=tracker._clock)
    tracker.registerTaskType('T', SUM)
    tracker.enqueueTask('T', 'a', None)
    b = tracker.enqueueTask('T', 'b', None)
    with pytest.raises(tracker.QueueFull, match='2 of 2'):
        tracker.enqueueTask('T', 'c', None)
    assert tracker.dequeueTask('srv') == [1]
    tracker.enqueueTask('T', 'c', None)  # room again
    tracker.reenqueueTask(1, 'again')  # may exceed the limit
    assert tracker.getQueueSize() == 3
    assert status('T', 'a') == 'ACCEPTED'
    tracker.MAX_QUEUE_SIZE = 10  # the module constant is live
    assert tracker.getMaxQueueSize() == 10
    assert b == 2


# -- The ATPD functions ------------------------------------------------------

def test_dequeue_start_and_stop(db, runner, clock):
    tracker.registerTaskType('T', SUM)
    with pytest.raises(tracker.QueueEmpty):
        tracker.dequeueTask('srv')
    zope.component.provideUtility(SimpleTask(len), interfaces.ITask,
                                  name='len')
    other = runner(lambda s: s.add('len', 'abc'))  # not a tracker task
    task_id = tracker.enqueueTask('T', 'a', [1, 2])
    clock.now += 1
    assert tracker.dequeueTask('srv-1', 'pulled') == [task_id]
    job = runner(lambda s: s.jobs[task_id])
    assert (job.status, job.worker, job.starts) == (PROCESSING, 'srv-1', 1)
    assert runner(lambda s: s.jobs[other].status) == QUEUED
    assert tracker.getTaskStatus(task_id) == (2, 'SCHEDULED')
    assert tracker.getQueueSize() == 0
    with pytest.raises(tracker.QueueEmpty):
        tracker.dequeueTask('srv-2')
    assert tracker.startTask(task_id) == ('T', 'a', SUM, [1, 2])
    assert status('T', 'a') == 'RUNNING'
    tracker.pauseTask(task_id, 'hold on')
    assert status('T', 'a') == 'PAUSED'
    tracker.resumeTask(task_id)
    tracker.setTaskResponse(task_id, '3.0')
    tracker.setTaskResponse(task_id, '<sum>3.0</sum>')  # replaces
    tracker.stopTaskSuccessIfNotFinished(task_id)
    assert status('T', 'a') == 'FINISHED'
    job = runner(lambda s: s.jobs[task_id])
    assert (job.status, job.output) == (COMPLETED, '<sum>3.0</sum>')
    tracker.stopTaskSuccessIfNotFinished(task_id, 'ignored')
    assert log('T', 'a') == [
        ('ACCEPTED', ''), ('SCHEDULED', 'pulled'), ('RUNNING', ''),
        ('PAUSED', 'hold on'), ('RUNNING', ''), ('FINISHED', '')]
    assert tracker.getTaskResponse('T', 'a') == ('<sum>3.0</sum>',
                                                 'text/xml')
    with pytest.raises(InvalidStatusError, match='it is FINISHED'):
        tracker.startTask(task_id)
    with pytest.raises(InvalidStatusError, match='pause'):
        tracker.pauseTask(task_id)


def test_failure_and_status_changes_of_ended_tasks(db, runner):
    tracker.registerTaskType('T', SUM)
    a = tracker.enqueueTask('T', 'a', None)
    tracker.stopTaskFailure(a, 'broken')  # straight from ACCEPTED
    job = runner(lambda s: s.jobs[a])
    assert (job.status, job.error) == (ERROR, 'broken')
    tracker.stopTaskSuccessIfNotFinished(a)  # FAILED stays
    assert status('T', 'a') == 'FAILED'
    tracker.stopTaskSuccess(a, 'fixed by hand')
    assert runner(lambda s: (s.jobs[a].status, s.jobs[a].error)) == (
        COMPLETED, None)
    tracker.reenqueueTask(a)
    assert status('T', 'a') == 'ACCEPTED'
    assert runner(lambda s: s.jobs[a].status) == QUEUED
    assert [e[0] for e in log('T', 'a')] == [
        'ACCEPTED', 'FAILED', 'FINISHED', 'ACCEPTED']
    with pytest.raises(InvalidStatusError, match='resume'):
        tracker.resumeTask(a)  # ACCEPTED: nothing to resume
    with pytest.raises(tracker.NoResponse, match='no response'):
        tracker.getTaskResponse('T', 'a')


def test_unknown_tasks(db, runner):
    tracker.registerTaskType('T', SUM)
    zope.component.provideUtility(SimpleTask(len), interfaces.ITask,
                                  name='len')
    other = runner(lambda s: s.add('len', 'abc'))
    funcs = (tracker.getTaskStatus, tracker.getTaskInfo,
             tracker.getTaskIdentifier, tracker.startTask, tracker.deleteTask,
             tracker.stopTaskSuccess, tracker.stopTaskFailure,
             tracker.stopTaskSuccessIfNotFinished, tracker.pauseTask,
             tracker.resumeTask, tracker.reenqueueTask,
             lambda task_id: tracker.TaskStatus(task_id).getStatus())
    for func in funcs:
        for bad in (12345, other, 'x'):
            with pytest.raises(tracker.TaskNotFound):
                func(bad)
    with pytest.raises(JobNotFoundError):  # a KeyError too
        tracker.setTaskResponse(12345, 'x')
    with pytest.raises(tracker.TaskNotFound, match="no task 'zz'"):
        tracker.getTaskLog('T', 'zz')
    with pytest.raises(tracker.TaskTypeNotFound):
        tracker.getTaskResponse('X', 'zz')
    with pytest.raises(tracker.TaskNotFound):
        tracker.deleteTaskByIdentifier('T', 'zz')


def test_delete(db, runner):
    tracker.registerTaskType('T', SUM)
    a = tracker.enqueueTask('T', 'a', None)
    b = tracker.enqueueTask('T', 'b', None)
    tracker.dequeueTask('srv')
    with pytest.raises(InvalidStatusError, match='SCHEDULED'):
        tracker.deleteTask(a)
    tracker.deleteTaskByIdentifier('T', 'b')
    assert not runner(lambda s: b in s.jobs)
    tracker.stopTaskFailure(a)
    tracker.deleteTask(a)
    assert runner(lambda s: len(s.jobs)) == 0
    tracker.enqueueTask('T', 'a', None)  # the identifier is free again
    assert status('T', 'a') == 'ACCEPTED'


# -- Zombies and retired tasks -----------------------------------------------

def test_zombies_are_reenqueued_until_maxstart(db, runner, clock):
    tracker.registerTaskType('T', SUM, timeout=60, maxrestart=1)  # 2 starts
    a = tracker.enqueueTask('T', 'a', None)
    tracker.dequeueTask('srv')
    assert tracker.reenqueueZombieTasks(now=T0 + 60) == []
    assert tracker.reenqueueZombieTasks(now=T0 + 61) == [a]
    assert status('T', 'a') == 'ACCEPTED'
    clock.now = T0 + 100
    tracker.dequeueTask('srv')
    tracker.startTask(a)
    assert runner(lambda s: s.jobs[a].starts) == 2
    assert tracker.reenqueueZombieTasks('sweep', now=T0 + 159) == []
    assert tracker.reenqueueZombieTasks('sweep', now=T0 + 161) == [a]
    assert status('T', 'a') == 'FAILED'
    job = runner(lambda s: s.jobs[a])
    assert job.status == ERROR and 'started 2 times' in job.error
    entries = log('T', 'a')
    assert [e[0] for e in entries] == [
        'ACCEPTED', 'SCHEDULED', 'ACCEPTED', 'SCHEDULED', 'RUNNING',
        'FAILED']
    assert 'zombie re-enqueued' in entries[2][1]
    assert entries[-1][1].startswith('sweep: abandoned')
    assert tracker.reenqueueZombieTasks(now=T0 + 10_000) == []


def test_worker_maintenance_handles_zombies_and_retired(db, runner, clock):
    tracker.registerTaskType('Z', SUM, timeout=10, maxrestart=0)
    tracker.registerTaskType('R', H + 'silent', timeret=100)
    z = tracker.enqueueTask('Z', 'z', None)
    tracker.dequeueTask('srv')
    r = tracker.enqueueTask('R', 'r', None)
    runner(lambda s: s.process(now=T0))
    assert status('R', 'r') == 'FINISHED'
    runner(lambda s: s.maintain(now=T0 + 50))
    assert status('Z', 'z') == 'FAILED'  # one start allowed, timed out
    runner(lambda s: s.maintain(now=T0 + 101))
    # retired tasks are searched for every min(60 s, shortest timeret)
    assert runner(lambda s: r in s.jobs)
    runner(lambda s: s.maintain(now=T0 + 150))
    assert not runner(lambda s: r in s.jobs)
    with pytest.raises(tracker.TaskNotFound):
        tracker.getTaskStatusByIdentifier('R', 'r')
    assert runner(lambda s: z in s.jobs)  # timeret -1: kept forever


def test_delete_retired_with_explicit_times(db, runner, clock):
    tracker.registerTaskType('T', SUM, timeret=600)
    tracker.registerTaskType('Forever', SUM, timeret=0)
    a = tracker.enqueueTask('T', 'a', None)
    b = tracker.enqueueTask('T', 'b', None)
    f = tracker.enqueueTask('Forever', 'f', None)
    clock.now = T0 + 10
    tracker.stopTaskSuccess(a)
    tracker.stopTaskFailure(f)
    assert tracker.deleteRetiredTasks(now=T0 + 610) == []
    assert tracker.deleteRetiredTasks(now=T0 + 611) == [a]
    assert tracker.deleteRetiredTasks(now=T0 + 10 ** 9) == []  # b waits
    assert set(runner(lambda s: set(s.jobs))) == {b, f}
    # a job removed through the service API leaves no record behind
    runner(lambda s: s.delete(b))
    with pytest.raises(tracker.TaskNotFound, match='no job any more'):
        tracker.getTaskStatus(b)
    assert tracker.deleteRetiredTasks() == [b]
    with pytest.raises(tracker.TaskNotFound, match='no tracker task'):
        tracker.getTaskStatus(b)


def test_reaped_jobs_respect_maxstart(db, runner):
    tracker.registerTaskType('T', SUM, maxrestart=0)
    a = tracker.enqueueTask('T', 'a', None)
    runner(lambda s: s.claim(now=T0, worker='w', lease=5))
    runner(lambda s: s.reap(now=T0 + 6))
    assert status('T', 'a') == 'FAILED'
    assert 'max_starts=1' in tracker.getTaskLog('T', 'a')[-1][2]


# -- Running handlers in-process ---------------------------------------------

def test_sequence_sum_in_process(db, runner, clock):
    tracker.registerTaskType('SequenceSum', SUM, 60, 600, 3)
    good = tracker.enqueueTask('SequenceSum', 'Task001', (1, 2, 3, 4, 5))
    bad = tracker.enqueueTask('SequenceSum', 'Task002', (1, 'x'))
    clock.now += 1
    runner(lambda s: s.process(now=T0 + 1))
    assert status('SequenceSum', 'Task001') == 'FINISHED'
    assert tracker.getTaskResponse('SequenceSum', 'Task001') == (
        '15.0', 'text/xml')
    assert [e[0] for e in log('SequenceSum', 'Task001')] == [
        'ACCEPTED', 'SCHEDULED', 'RUNNING', 'FINISHED']
    assert log('SequenceSum', 'Task002')[-1] == (
        'FAILED', 'Input must be a sequence of numbers!')
    jobs = runner(lambda s: (s.jobs[good].status, s.jobs[good].output,
                             s.jobs[bad].status, s.jobs[bad].error))
    assert jobs == (COMPLETED, '15.0', ERROR,
                    'Input must be a sequence of numbers!')
    times = [rec[0] for rec in tracker.getTaskLog('SequenceSum', 'Task001')]
    assert times == sorted(times)


def test_handlers_outcomes(db, runner):
    for name in ('silent', 'succeed', 'raises', 'pauses', 'enqueues'):
        tracker.registerTaskType(name, H + name)
    tracker.registerTaskType('missing', 'remotetask.tests.nowhere.handler')
    ids = {name: tracker.enqueueTask(name, 't', name)
           for name in ('silent', 'succeed', 'raises', 'pauses', 'missing')}
    ids['enqueues'] = tracker.enqueueTask('enqueues', 't', 'silent')
    for name in ('silent', 'succeed', 'raises', 'pauses', 'missing',
                 'enqueues'):
        assert runner(lambda s: s.processNext(now=T0, jobid=ids[name]))
    assert log('silent', 't')[-1] == ('FINISHED', '')
    assert log('succeed', 't')[-1] == ('FINISHED', 'all succeed done')
    assert tracker.getTaskResponse('succeed', 't') == ('<ok/>', 'text/xml')
    assert log('raises', 't')[-1] == (
        'FAILED', "ValueError: cannot handle 'raises'")
    assert runner(lambda s: 'Traceback' in s.jobs[ids['raises']].traceback)
    assert log('missing', 't')[-1][0] == 'FAILED'
    assert 'can not import the handler' in log('missing', 't')[-1][1]
    assert [e[0] for e in log('pauses', 't')] == [
        'ACCEPTED', 'SCHEDULED', 'RUNNING', 'PAUSED', 'RUNNING', 'FINISHED']
    assert tracker.getTaskResponse('pauses', 't') == (
        "[(4, 'PAUSED'), (3, 'RUNNING'), (6, 'FAILED')]", 'text/plain')
    assert status('enqueues', 't') == 'FINISHED'
    assert status('silent', 'follow-up of %d' % ids['enqueues']) == \
        'ACCEPTED'


def test_service_side_changes_are_logged(db, runner):
    tracker.registerTaskType('T', H + 'raises')
    a = tracker.enqueueTask('T', 'a', None)
    b = tracker.enqueueTask('T', 'b', None)
    runner(lambda s: s.cancel(a))  # e.g. `remotetask cancel`
    assert status('T', 'a') == 'FAILED'
    assert log('T', 'a')[-1] == ('FAILED', 'cancelled')
    runner(lambda s: s.processNext(now=T0, jobid=b))
    runner(lambda s: s.retry(b, now=T0))  # e.g. the web service
    assert status('T', 'b') == 'ACCEPTED'
    runner(lambda s: s.processNext(now=T0, jobid=b))
    assert [e[0] for e in log('T', 'b')] == [
        'ACCEPTED', 'SCHEDULED', 'RUNNING', 'FAILED', 'ACCEPTED',
        'SCHEDULED', 'RUNNING', 'FAILED']


# -- Concurrency -------------------------------------------------------------

def test_log_conflict_resolution_is_a_merge():
    e = [(float(i), 1, str(i)) for i in range(5)]
    old = {'entries': (e[0],)}
    merged = trackerdata.resolveLog(old, {'entries': (e[0], e[3])},
                                    {'entries': (e[0], e[1], e[4])})
    assert merged['entries'] == (e[0], e[1], e[3], e[4])
    with pytest.raises(Exception, match='changed, not appended'):
        trackerdata.resolveLog(old, {'entries': (e[2],)},
                               {'entries': (e[0], e[1])})


def test_record_conflict_resolution():
    old = {'code': 2, 'updated': 10.0, 'response': None, 'type': 'T'}
    # a pause from outside (committed) while the worker ends the task (new)
    paused = dict(old, code=4, updated=11.0)
    ended = dict(old, code=5, updated=12.0, response='R')
    assert trackerdata.resolveRecord(old, paused, ended) == dict(
        old, code=5, updated=12.0, response='R')
    # the later status wins whichever committed first
    assert trackerdata.resolveRecord(old, ended, paused) == dict(
        old, code=5, updated=12.0, response='R')
    with pytest.raises(Exception, match="both changed the 'response'"):
        trackerdata.resolveRecord(old, dict(old, response='A'),
                                  dict(old, response='B'))
    assert trackerdata.resolveRecord(old, dict(old, response='A'),
                                     dict(old, response='A'))['response'] \
        == 'A'


def test_status_set_while_a_worker_ends_the_task(tmp_path):
    db = ZODB.DB(str(tmp_path / 'Data.fs'))
    tracker.configure(db)
    tracker.registerTaskType('T', H + 'silent')
    a = tracker.enqueueTask('T', 'a', None)
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    service = getService(conn)
    job = service.claim(worker='w')[0]  # a worker claims ...
    tm.commit()
    service.run(job)  # ... and runs it, not yet committed
    tracker.pauseTask(a, 'paused from outside')  # commits meanwhile
    tm.commit()  # no conflict: the records and the logs merge
    entries = tracker.getTaskLog('T', 'a')
    assert sorted(e[1][1] for e in entries) == sorted([
        'ACCEPTED', 'SCHEDULED', 'RUNNING', 'PAUSED', 'FINISHED'])
    assert [e[0] for e in entries] == sorted(e[0] for e in entries)
    assert status('T', 'a') == 'FINISHED'  # the job decides
    conn.close()
    tracker.unconfigure()
    db.close()


def test_concurrent_log_appends_do_not_conflict(tmp_path):
    db = ZODB.DB(str(tmp_path / 'Data.fs'))  # resolves conflicts
    tracker.configure(db)
    tracker.registerTaskType('T', SUM)
    a = tracker.enqueueTask('T', 'a', None)
    tm1 = transaction.TransactionManager()
    tm2 = transaction.TransactionManager()
    c1, c2 = db.open(tm1), db.open(tm2)
    logs = [trackerdata.getData(getService(c)).records[a].log
            for c in (c1, c2)]
    logs[0].append(T0 + 1, 3, 'one')
    logs[1].append(T0 + 2, 4, 'two')
    tm1.commit()
    tm2.commit()  # resolved by Log._p_resolveConflict
    assert log('T', 'a') == [('ACCEPTED', ''), ('RUNNING', 'one'),
                             ('PAUSED', 'two')]
    c1.close()
    c2.close()
    tracker.unconfigure()
    db.close()


def test_two_atpds_never_dequeue_one_task(db, runner):
    tracker.registerTaskType('T', SUM)
    for i in range(5):
        tracker.enqueueTask('T', 'task%d' % i, None)
    pulled = []
    for server in ('a', 'b', 'a', 'b', 'a'):
        pulled += tracker.dequeueTask(server)
    assert sorted(pulled) == sorted(set(pulled)) and len(pulled) == 5
    with pytest.raises(tracker.QueueEmpty):
        tracker.dequeueTask('b')


def test_concurrent_producers_of_one_identifier(tmp_path):
    import threading
    db = ZODB.DB(str(tmp_path / 'Data.fs'))
    tracker.configure(db)
    try:
        tracker.registerTaskType('T', SUM)
        barrier = threading.Barrier(4)
        outcomes = []

        def produce():
            barrier.wait()
            try:
                outcomes.append(tracker.enqueueTask('T', 'same', None))
            except tracker.DuplicateTask:
                outcomes.append('duplicate')

        threads = [threading.Thread(target=produce) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(outcomes) == 4 and outcomes.count('duplicate') == 3
        assert tracker.getQueueSize() == 1
        runner = ServiceRunner(db)
        assert runner(lambda s: len(s.jobs)) == 1
    finally:
        tracker.unconfigure()
        db.close()


# -- The tutorial ------------------------------------------------------------

def test_tracker_txt():
    path = os.path.join(os.path.dirname(tracker.__file__), 'tracker.txt')
    failures, tests = doctest.testfile(
        path, module_relative=False, globs={}, report=True)
    tracker.unconfigure()
    tracker.MAX_QUEUE_SIZE = 64
    assert tests > 20 and failures == 0


# -- The command line sees tracker tasks ---------------------------------------

def test_cli_sees_and_cancels_tracker_tasks(tmp_path):
    import json
    import subprocess
    from remotetask.testing import remotetaskCommand, subprocessEnv
    path = str(tmp_path / 'Data.fs')

    def command(*args):
        return subprocess.run(
            remotetaskCommand(*args, '--db', path, '--import',
                              'remotetask.tracker'),
            env=subprocessEnv(), capture_output=True, text=True, timeout=60,
            check=True).stdout

    tracker.configure('file://' + path)
    try:
        tracker.registerTaskType('T', SUM)
        task_id = tracker.enqueueTask('T', 'a', (1, 2))
        tracker.unconfigure()  # the command opens the file itself
        shown = json.loads(command('status', task_id))
        assert (shown['task'], shown['status']) == ('remotetask.tracker',
                                                    'queued')
        command('cancel', task_id)
        tracker.configure('file://' + path)
        assert log('T', 'a')[-1] == ('FAILED', 'cancelled')
    finally:
        tracker.unconfigure()

"""Acceptance review of the tracker facade: facade calls from other
processes while a worker runs a tracker task; TaskStatus inside a
handler."""
import signal

import pytest
import ZODB

from remotetask import tracker
from remotetask.db import ServiceRunner
from remotetask.interfaces import COMPLETED, ERROR, InvalidStatusError
from remotetask.tests.test_tracker_worker import (  # noqa: F401 fixtures
    NO_WORKER, facade, waitFor, worker, zeo)

T0 = 1_700_000_000.0
H = 'remotetask.tests.trackerhandlers.'


@pytest.fixture
def db():
    database = ZODB.DB(None)
    tracker.configure(database, clock=lambda: T0)
    yield database
    tracker.unconfigure()
    database.close()


def history(identifier, type='T'):
    return [(rec[1][1], rec[2]) for rec in tracker.getTaskLog(type,
                                                              identifier)]


def claimed(db, task_id):
    """A worker's claim of the task, committed (its run is not)."""
    def claim(service):
        jobs = service.claim(now=T0 + 1, worker='w-1', lease=60)
        assert [job.id for job in jobs] == [task_id]
    ServiceRunner(db)(claim)


@pytest.mark.parametrize('call, final', [
    (lambda i: tracker.stopTaskFailure(i, 'stopped'), 'FAILED'),
    (lambda i: tracker.stopTaskSuccess(i, 'stopped'), 'FINISHED'),
    (lambda i: tracker.reenqueueTask(i, 'stopped'), 'ACCEPTED')])
def test_ending_a_task_a_worker_runs_logs_its_start(db, call, final):
    # The worker logs SCHEDULED and RUNNING in the transaction of its run,
    # which is dropped when the task is ended elsewhere: the facade logs
    # them for it.
    tracker.registerTaskType('T', H + 'silent')
    task_id = tracker.enqueueTask('T', 'a', None)
    claimed(db, task_id)
    call(task_id)
    assert history('a') == [
        ('ACCEPTED', ''), ('SCHEDULED', 'dequeued (worker w-1, start 1)'),
        ('RUNNING', ''), (final, 'stopped')]
    times = [rec[0].timestamp() for rec in tracker.getTaskLog('T', 'a')]
    assert times == [T0, T0 + 1, T0 + 1, T0]  # as the clocks said


def test_zombie_history_shows_each_start(db):
    tracker.registerTaskType('T', H + 'silent', timeout=10, maxrestart=0)
    task_id = tracker.enqueueTask('T', 'a', None)
    claimed(db, task_id)
    assert tracker.reenqueueZombieTasks(now=T0 + 20) == [task_id]
    assert [h[0] for h in history('a')] == [
        'ACCEPTED', 'SCHEDULED', 'RUNNING', 'FAILED']
    # an ATPD-style start (dequeueTask, startTask) is not logged twice
    tracker.registerTaskType('T', H + 'silent', timeout=10, maxrestart=2)
    other = tracker.enqueueTask('T', 'b', None)
    tracker.dequeueTask('atpd')
    tracker.startTask(other)
    tracker.stopTaskFailure(other, 'x')
    assert [h[0] for h in history('b')] == [
        'ACCEPTED', 'SCHEDULED', 'RUNNING', 'FAILED']


@pytest.mark.zeo
@pytest.mark.slow
@pytest.mark.skipif(NO_WORKER is not None, reason=NO_WORKER or '')
def test_facade_calls_from_another_process_while_the_worker_runs(
        zeo, worker, facade, tmp_path):  # noqa: F811
    tracker.registerTaskType('T', H + 'waits', timeout=120)
    gates = {name: str(tmp_path / name) for name in ('a', 'b')}
    a = tracker.enqueueTask('T', 'a', gates['a'])
    waitFor(lambda: tracker.getTaskStatus(a)[1] == 'RUNNING', 'a RUNNING')
    assert tracker.getTaskInfo(a) == ('T', 'a', 3, 'RUNNING')
    with pytest.raises(InvalidStatusError, match='RUNNING .stop it first'):
        tracker.deleteTask(a)
    tracker.stopTaskFailure(a, 'stopped by the operator')
    assert history('a') == [
        ('ACCEPTED', ''),
        ('SCHEDULED', history('a')[1][1]), ('RUNNING', ''),
        ('FAILED', 'stopped by the operator')]
    assert 'worker atpd-1' in history('a')[1][1]
    open(gates['a'], 'w').close()  # the handler returns: its run is dropped
    b = tracker.enqueueTask('T', 'b', gates['b'])
    waitFor(lambda: tracker.getTaskStatus(b)[1] == 'RUNNING', 'b RUNNING')
    assert tracker.getTaskStatus(a) == (6, 'FAILED')
    assert facade(lambda s: (s.jobs[a].status, s.jobs[a].starts)) == (
        ERROR, 1)
    with pytest.raises(tracker.NoResponse):
        tracker.getTaskResponse('T', 'a')
    # re-enqueued while running: the run is dropped, the task runs again
    tracker.reenqueueTask(b, 'again')
    open(gates['b'], 'w').close()
    waitFor(lambda: tracker.getTaskStatus(b)[1] == 'FINISHED', 'b FINISHED')
    assert [h[0] for h in history('b')] == [
        'ACCEPTED', 'SCHEDULED', 'RUNNING', 'ACCEPTED', 'SCHEDULED',
        'RUNNING', 'FINISHED']
    assert tracker.getTaskResponse('T', 'b') == ('gate opened', 'text/plain')
    assert facade(lambda s: s.jobs[b].status) == COMPLETED
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(60) == 0


def test_every_task_status_method_inside_a_handler(db):
    tracker.registerTaskType('T', H + 'introspects')
    ids = [tracker.enqueueTask('T', name, name) for name in ('ok', 'raise',
                                                             'fail')]
    for task_id in ids:
        ServiceRunner(db)(lambda s: s.processNext(now=T0, jobid=task_id))
    assert tracker.getTaskStatus(ids[0]) == (5, 'FINISHED')
    assert history('ok')[-1] == ('FINISHED', 'looked')
    assert tracker.getTaskResponse('T', 'ok') == (
        "[('T', 'ok', 3, 'RUNNING'), ('T', 'ok'), (3, 'RUNNING'), "
        "(3, 4, 6), (5, 'FINISHED')]", 'text/plain')
    # an exception after setSuccess: FAILED with its message
    assert tracker.getTaskStatus(ids[1]) == (6, 'FAILED')
    assert history('raise')[-1] == ('FAILED',
                                    'RuntimeError: after setSuccess')
    # setFailure after setSuccess: the last status set wins
    assert tracker.getTaskStatus(ids[2]) == (6, 'FAILED')
    assert history('fail')[-1] == ('FAILED', 'changed my mind')
    assert [h[0] for h in history('fail')] == [
        'ACCEPTED', 'SCHEDULED', 'RUNNING', 'FAILED']


def _writesThenFails(input):
    from remotetask.job import currentJob
    context = currentJob()
    context.service.jobs[context.jobid].meta = {'written': 'by the task'}
    raise RuntimeError('boom')


@pytest.mark.parametrize('kind', ['task', 'handler'])
def test_a_failing_task_leaves_no_writes(db, kind):
    import zope.component
    from remotetask.task import SimpleTask
    run = ServiceRunner(db)
    if kind == 'task':
        zope.component.provideUtility(
            SimpleTask(_writesThenFails, max_retries=0), name='writes')
        jobid = run(lambda s: s.add('writes', 1))
        run(lambda s: s.processNext(now=T0, jobid=jobid))
        assert run(lambda s: (s.jobs[jobid].status,
                              dict(s.jobs[jobid].meta))) == (ERROR, {})
    else:
        tracker.registerTaskType('T', H + 'introspects')
        jobid = tracker.enqueueTask('T', 'raise', 'raise')
        run(lambda s: s.processNext(now=T0, jobid=jobid))
        assert tracker.getTaskStatus(jobid) == (6, 'FAILED')
        with pytest.raises(tracker.NoResponse):
            tracker.getTaskResponse('T', 'raise')


def test_dequeue_takes_the_first_due_tracker_task_past_other_jobs(db):
    import zope.component
    from remotetask.task import SimpleTask
    zope.component.provideUtility(SimpleTask(lambda input: input),
                                  name='echo')
    tracker.registerTaskType('T', H + 'silent')
    run = ServiceRunner(db)
    run(lambda s: [s.add('echo', i, now=T0 - 100) for i in range(50)])
    # enqueued in the future (by the facade's clock): due then
    tracker.configure(db, clock=lambda: T0 + 100)
    later = tracker.enqueueTask('T', 'later', None)
    tracker.configure(db, clock=lambda: T0)
    second = tracker.enqueueTask('T', 'second', None)
    assert run(lambda s: (s.jobs[second].eta, s.jobs[later].eta)) == (
        T0, T0 + 100)
    assert tracker.dequeueTask('atpd') == [second]
    with pytest.raises(tracker.QueueEmpty):
        tracker.dequeueTask('atpd')
    tracker.configure(db, clock=lambda: T0 + 100)
    assert tracker.dequeueTask('atpd') == [later]
    assert run(lambda s: s.count('queued')) == 50


def test_a_response_that_can_not_be_stored_is_refused(db):
    import threading
    from remotetask.interfaces import InvalidInputError
    tracker.registerTaskType('T', H + 'silent')
    task_id = tracker.enqueueTask('T', 'a', None)
    with pytest.raises(InvalidInputError, match='the response can not be '
                       'stored .pickled.: TypeError: cannot pickle'):
        tracker.setTaskResponse(task_id, threading.Lock())
    with pytest.raises(ValueError, match='mimeType must be a string, '
                       'not 5'):
        tracker.setTaskResponse(task_id, 'x', 5)
    with pytest.raises(tracker.NoResponse):
        tracker.getTaskResponse('T', 'a')
    tracker.setTaskResponse(task_id, b'\x00binary', 'application/gzip')
    assert tracker.getTaskResponse('T', 'a') == (b'\x00binary',
                                                 'application/gzip')

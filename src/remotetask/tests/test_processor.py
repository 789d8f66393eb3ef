"""Processors in this process, on a FileStorage database.

Each test starts real processor threads with connections of their own and
watches the jobs from the test's own connection.  Waits poll with generous
deadlines; no test asserts a duration.
"""
import doctest
import os
import re
import signal
import threading
import time

import pytest
import transaction
from BTrees.OOBTree import OOBTree
import zope.component
from zope.interface.verify import verifyObject
import ZODB
import ZODB.FileStorage
from ZODB.POSException import ConflictError

from remotetask import Retry, TaskError, TimeLimitExceeded, interfaces
from remotetask import processor as processormod
from remotetask import threads
from remotetask.interfaces import ServiceNotStoredError
from remotetask.job import currentJob
from remotetask.processor import Processor
from remotetask.service import TaskService
from remotetask.task import SimpleTask, TaskBase
from remotetask.worker import serve

HERE = os.path.dirname(os.path.abspath(__file__))


class Env:

    def __init__(self, path):
        self.db = ZODB.DB(ZODB.FileStorage.FileStorage(path))
        self.tm = transaction.TransactionManager()
        self.conn = self.db.open(self.tm)
        self.root = self.conn.root()
        self.root['tasks'] = TaskService()
        self.root['tasks'].__name__ = 'tasks'
        self.root['seen'] = OOBTree()
        self.tm.commit()
        self.processors = []

    @property
    def service(self):
        self.tm.begin()
        return self.root['tasks']

    def add(self, task, input=None, **kw):
        # Like any producer, retry when the commit conflicts with a claim.
        for attempt in self.tm.attempts(10):
            with attempt:
                jobid = self.root['tasks'].add(task, input, **kw)
        return jobid

    def job(self, jobid):
        return self.service.jobs[jobid]

    def processor(self, **options):
        options.setdefault('lease', 2.0)
        options.setdefault('poll_interval', 0.5)
        options.setdefault('maintenance_interval', 0.5)
        p = Processor(self.db, **options)
        self.processors.append(p)
        p.start()
        return p

    def wait(self, predicate, timeout=60.0, what='condition'):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.tm.begin()
            if predicate():
                return
            time.sleep(0.02)
        raise AssertionError('timed out waiting for %s: %s'
                             % (what, self.service.counts()))

    def waitStatus(self, jobid, status, timeout=60.0):
        self.wait(lambda: self.job(jobid).status == status, timeout,
                  'job %s to be %s' % (jobid, status))
        return self.job(jobid)

    def close(self):
        for p in self.processors:
            if p.running:
                p.stop(0)
        self.tm.abort()
        self.conn.close()
        self.db.close()


@pytest.fixture
def env(tmp_path):
    e = Env(str(tmp_path / 'Data.fs'))
    yield e
    e.close()


def task(name, func, **policy):
    t = SimpleTask(func, **{k: v for k, v in policy.items()
                            if k != 'retry_on'})
    if 'retry_on' in policy:
        t.retry_on = policy['retry_on']
    zope.component.provideUtility(t, name=name)
    return t


class Recorder(TaskBase):
    """Records its input in the job's transaction."""

    def __call__(self, service, jobid, input):
        service._p_jar.root()['seen'][input] = jobid
        return input


# -- the processor API -----------------------------------------------------

def test_processor_provides_its_interface(env):
    verifyObject(interfaces.IProcessor, Processor(env.db))
    verifyObject(interfaces.ITaskService, env.service)


@pytest.mark.parametrize('option, value', [
    ('concurrency', 0), ('batch', 0), ('lease', 0), ('lease', -1),
    ('poll_interval', 0), ('grace', -1), ('attempts', 0),
    ('concurrency', 2.0), ('concurrency', True), ('lease', '5'),
    ('lease', None), ('grace', 'abc'), ('maintenance_interval', '1'),
    ('lease', float('inf')), ('poll_interval', float('nan')),
    ('grace', float('inf')), ('heartbeat', float('inf'))])
def test_bad_options_are_refused(env, option, value):
    with pytest.raises(ValueError, match=option):
        Processor(env.db, **{option: value})


def test_missing_service_is_a_clear_error(env):
    with pytest.raises(ValueError, match="no task service under 'other'"):
        Processor(env.db, 'other').start()


def test_one_at_a_time_processor_runs_jobs_in_order(env):
    task('echo', lambda x: x)
    ids = [env.add('echo', i) for i in range(10)]
    p = env.processor(concurrency=1)
    env.wait(lambda: env.service.count('completed') == 10)
    # One at a time: no two runs overlap.
    runs = sorted((env.job(i).started, env.job(i).completed) for i in ids)
    for (_, end), (start, _) in zip(runs, runs[1:]):
        assert end <= start
    assert [env.job(i).output for i in ids] == list(range(10))
    assert {env.job(i).worker for i in ids} == {p.worker_id + '/1'}
    env.wait(lambda: p.stats['completed'] == 10)   # counted after commit
    p.stop()
    assert not p.running


def test_jobs_of_tasks_it_does_not_have_are_left_to_others(env):
    task('echo', lambda x: x)
    task('other', lambda x: x)
    foreign = env.add('other', 'not mine')
    zope.component.getGlobalSiteManager().unregisterUtility(
        provided=interfaces.ITask, name='other')
    mine = [env.add('echo', i) for i in range(3)]
    p = env.processor(concurrency=1)
    env.wait(lambda: env.service.count('completed') == 3)
    p.stop()
    assert [env.job(i).status for i in mine] == ['completed'] * 3
    assert env.job(foreign).status == 'queued'     # not failed, not taken
    assert env.job(foreign).attempts == ()


def test_each_job_is_logged_with_its_outcome_and_duration(env, caplog):
    task('echo', lambda x: x)
    task('fail', lambda x: 1 / 0)
    ok, bad = env.add('echo', 1), env.add('fail')
    with caplog.at_level('INFO', logger='remotetask.worker'):
        p = env.processor(worker_id='logged')
        env.waitStatus(bad, 'error')
        env.waitStatus(ok, 'completed')
        env.wait(lambda: p.stats['processed'] == 2)
        # (The count comes just before the line: wait for the line.)
        env.wait(lambda: caplog.text.count(' ended ') == 2)
    text = caplog.text
    assert 'job %d (echo) started by logged/1' % ok in text
    assert 'job %d (fail) started by logged/1' % bad in text
    assert re.search(r'job %d \(echo\) ended completed in \d+\.\d{3}s' % ok,
                     text)
    assert re.search(r'job %d \(fail\) ended error in \d+\.\d{3}s: '
                     r'ZeroDivisionError: division by zero' % bad, text)


def test_one_claim_takes_a_batch_and_stop_hands_back_unstarted_jobs(
        env, monkeypatch):
    # (Not handed back by the clock before the stop, however slow this is.)
    monkeypatch.setattr(processormod, 'HOLD_SECONDS', 3600)
    started = threading.Event()
    release = threading.Event()
    task('block', lambda x: started.set() or release.wait(30) and x)
    ids = [env.add('block', i) for i in range(3)]
    p = env.processor(batch=3)
    try:
        assert started.wait(30)
        env.wait(lambda: env.service.count('processing') == 3,
                 what='the batch to be claimed')
        jobs = [env.job(i) for i in ids]
        # One claim transaction: one start time, one thread.
        assert len({j.started for j in jobs}) == 1
        assert {j.worker for j in jobs} == {p.worker_id + '/1'}
        assert sorted(p.stop(timeout=0.2)) == ids
    finally:
        release.set()
    for jobid in ids:
        job = env.job(jobid)
        assert job.status == 'queued'
        assert job.attempts[-1]['outcome'] == 'handed back'
    # The start of the one that ran counts, not those of the others.
    assert sorted(env.job(i).starts for i in ids) == [0, 0, 1]
    assert p.stats['handed_back'] == 3


def test_a_batch_of_short_jobs_commits_in_groups(env):
    """Claimed jobs run in groups that commit once: fewer transactions
    than jobs, each job's writes and outcome still together, a failing
    task rolled back alone."""
    zope.component.provideUtility(Recorder(), name='record')

    def recordThenFail(input):
        currentJob().service._p_jar.root()['seen'][input] = 'written'
        raise TaskError('fails after writing')
    task('fail', recordThenFail)
    ids = [env.add('record', 'in-%02d' % i) for i in range(30)]
    bad = env.add('fail', 'bad')
    before = env.db.lastTransaction()
    p = env.processor(batch=40)
    env.wait(lambda: env.service.count('processing') == 0 and
             env.service.count('queued') == 0, what='the batch to run')
    p.stop()
    assert [env.job(i).status for i in ids] == ['completed'] * 30
    assert env.job(bad).status == 'error'
    seen = env.root['seen']
    assert sorted(seen) == ['in-%02d' % i for i in range(30)]  # no 'bad'
    it = env.db.storage.iterator(before)
    try:
        commits = len(list(it)) - 1
    finally:
        it.close()
    # One claim, a few group commits (and the clock's maintenance).
    assert commits < 15, commits


def test_a_job_with_a_bad_time_limit_does_not_block_the_others(env):
    task('echo', lambda x: x)
    bad = env.add('echo', 'bad')
    good = env.add('echo', 'good')
    # Stored by hand (or by an old version): not a number.
    env.job(bad).time_limit = 'abc'
    env.tm.commit()
    env.processor()
    assert env.waitStatus(good, 'completed').output == 'good'
    assert env.waitStatus(bad, 'error').error.startswith('TypeError')


def test_multithreaded_processor_records_each_input_once(env):
    zope.component.provideUtility(Recorder(), name='record')
    ids = [env.add('record', i) for i in range(60)]
    p = env.processor(concurrency=3)
    env.wait(lambda: env.service.count('completed') == 60)
    assert dict(env.root['seen']) == dict(zip(range(60), ids))
    workers = {env.job(i).worker for i in ids}
    assert workers <= {'%s/%d' % (p.worker_id, n) for n in (1, 2, 3)}
    assert env.service.count('processing') == 0
    assert all(len(env.job(i).attempts) == 1 for i in ids)
    p.stop()


def test_start_stop_is_processing_on_a_stored_service(env):
    task('echo', lambda x: x)
    loose = TaskService()
    with pytest.raises(ServiceNotStoredError, match='not stored'):
        loose.startProcessing()
    assert not loose.isProcessing()
    assert loose.stopProcessing() is False
    # Stored but not committed: the processor's connections can't see it.
    env.root['uncommitted'] = uncommitted = TaskService()
    env.tm.savepoint()
    with pytest.raises(ServiceNotStoredError, match='not committed'):
        uncommitted.startProcessing()
    env.tm.abort()

    service = env.service
    p = service.startProcessing(lease=2, poll_interval=0.5)
    try:
        assert service.isProcessing()
        assert service.startProcessing() is p     # one per service
        ids = [env.add('echo', i) for i in range(5)]
        env.wait(lambda: env.service.count('completed') == 5)
        assert [env.job(i).output for i in ids] == list(range(5))
    finally:
        assert service.stopProcessing(5) is True
    assert not service.isProcessing()
    assert not p.running
    assert service.stopProcessing() is False


def test_invalidations_wake_the_processor(env):
    seen = []
    threads.hooks.add(env.db, seen.append)
    try:
        task('echo', lambda x: x)
        env.add('echo', 1)
    finally:
        threads.hooks.remove(env.db, seen.append)
    lengthOids = {c._p_oid for c in env.service._queue.counters()}
    assert any(lengthOids & set(oids) for oids in seen)
    # A processor that would poll only every 60s runs a new job at once.
    # Its clock, which also wakes idle threads when a job is due, is kept
    # from doing so here: only the invalidation can wake the thread.
    p = Processor(env.db, lease=2.0, poll_interval=60,
                  maintenance_interval=0.5)
    p._checkDue = lambda tm, conn, now: None
    env.processors.append(p)
    p.start()
    env.wait(lambda: p.stats['maintenance_runs'] > 0 and p._idle)
    jobid = env.add('echo', 2)
    env.waitStatus(jobid, 'completed', timeout=30)


def test_the_clock_starts_delayed_jobs(env):
    task('echo', lambda x: x)
    p = env.processor(poll_interval=60)
    jobid = env.add('echo', 'later', delay=0.5)
    assert env.job(jobid).status == 'delayed'
    eta = env.job(jobid).eta
    job = env.waitStatus(jobid, 'completed', timeout=30)
    assert job.started >= eta
    p.stop()


def test_the_clock_starts_cron_jobs_again_and_again(env):
    task('tick', lambda x: 'tick')
    p = env.processor(poll_interval=60)
    # (Once a second is the fastest a cron job may repeat.)
    jobid = env.service.addCronJob('tick', interval=1)
    env.tm.commit()
    env.wait(lambda: len(env.job(jobid).attempts) >= 3, what='3 runs')
    job = env.job(jobid)
    runs = job.attempts[:2]
    assert [a['outcome'] for a in runs] == ['completed', 'completed']
    assert runs[1]['start'] >= runs[0]['end'] + 1 - 0.01
    assert job.status in ('cronjob', 'processing')
    assert p.stats['completed'] >= 2


def test_the_clock_starts_a_delayed_cron_job_once(env):
    # lovely's addCronJob(delay=...), added without a now: the processor
    # runs it at its clock time (its provisional schedule is the real one).
    task('tick', lambda x: 'tick')
    p = env.processor(poll_interval=60)
    jobid = env.service.addCronJob('tick', delay=0.3)
    env.tm.commit()
    assert env.job(jobid).status == 'delayed'
    eta = env.job(jobid).eta
    job = env.waitStatus(jobid, 'completed', timeout=30)
    assert job.started >= eta and len(job.attempts) == 1
    p.stop()


def test_a_task_calling_sys_exit_does_not_kill_the_thread(env):
    import sys
    task('exit', lambda x: sys.exit(3))
    task('echo', lambda x: x)
    first = env.add('exit')
    second = env.add('echo', 'still here')
    p = env.processor()
    job = env.waitStatus(first, 'error')
    assert job.error == 'SystemExit: 3'
    assert env.waitStatus(second, 'completed').output == 'still here'
    assert p.running


# -- leases, zombies, time limits -------------------------------------------

def test_leases_are_renewed_while_a_job_runs(env):
    release = threading.Event()
    task('block', lambda x: release.wait(30))
    jobid = env.add('block')
    env.processor(lease=1.0, maintenance_interval=0.1)
    job = env.waitStatus(jobid, 'processing')
    first = job.lease_expires
    # Renewed until the job has run for longer than a lease.
    env.wait(lambda: env.job(jobid).lease_expires > first + 1.0,
             what='the lease to be renewed')
    release.set()
    job = env.waitStatus(jobid, 'completed')
    # Ran for longer than its lease, never reaped: one start.
    assert job.starts == 1
    assert [a['outcome'] for a in job.attempts] == ['completed']


def claimAsDeadWorker(env, jobid, now=None, lease=0.01):
    claimed = env.service.claim(now=now, worker='dead', lease=lease)
    assert [j.id for j in claimed] == [jobid]
    env.tm.commit()


def test_expired_lease_requeues_the_job_and_counts_the_start(env):
    task('echo', lambda x: x)
    jobid = env.add('echo', 'again')
    claimAsDeadWorker(env, jobid)
    p = env.processor()
    job = env.waitStatus(jobid, 'completed')
    assert job.starts == 2
    assert [(a['worker'], a['outcome'], a['error']) for a in job.attempts] \
        == [('dead', 'lost', 'lease expired'),
            (p.worker_id + '/1', 'completed', None)]
    env.wait(lambda: p.stats['reaped'] >= 1)


def test_max_starts_reached_ends_the_job_with_error(env):
    task('echo', lambda x: x, max_starts=2)
    jobid = env.add('echo')
    t = time.time()
    claimAsDeadWorker(env, jobid, now=t)
    assert env.service.reap(now=t + 0.05) == [jobid]
    env.tm.commit()
    assert env.job(jobid).status == 'queued'
    assert env.job(jobid).starts == 1
    claimAsDeadWorker(env, jobid, now=t + 0.1)
    env.processor()
    job = env.waitStatus(jobid, 'error')
    assert job.error.startswith('started 2 times, the maximum (max_starts=2)')
    assert [a['outcome'] for a in job.attempts] == ['lost', 'error']


def test_time_limit_ends_an_overrunning_job(env):
    saw = []

    def slow(input):
        context = currentJob()
        deadline = time.monotonic() + 30
        while not context.cancelled and time.monotonic() < deadline:
            time.sleep(0.01)
        saw.append(context.cancelled)
        return 'too late'

    task('slow', slow, time_limit=0.3)
    task('slowish', slow)
    first = env.add('slow')
    second = env.add('slowish', time_limit=0.2)   # per-job override
    p = env.processor(concurrency=2)
    for jobid, limit in ((first, '0.3'), (second, '0.2')):
        job = env.waitStatus(jobid, 'error')
        assert job.error == 'time limit of %ss exceeded' % limit
        assert job.output is None
    env.wait(lambda: p.stats['lost'] == 2, what='both results dropped')
    assert saw == [True, True]


def test_time_limit_retried_per_policy(env):
    calls = []

    def slowOnce(input):
        calls.append(1)
        context = currentJob()
        while len(calls) == 1 and not context.cancelled:
            time.sleep(0.01)
        return len(calls)

    # The first run waits until cancelled; the second returns at once, far
    # within the limit even on a loaded machine.
    task('slow', slowOnce, time_limit=2.0, max_retries=2, retry_backoff=0.01,
         retry_on=(TimeLimitExceeded,))
    jobid = env.add('slow')
    env.processor()
    job = env.waitStatus(jobid, 'completed')
    assert job.output == 2
    assert [a['outcome'] for a in job.attempts] == ['retry', 'completed']
    assert job.attempts[0]['error'] == 'time limit of 2s exceeded'


# -- retries and failures -----------------------------------------------------

def test_retry_with_backoff_keeps_the_attempt_history(env):
    failures = []

    def flaky(input):
        if len(failures) < 2:
            failures.append(1)
            raise ValueError('boom %d' % len(failures))
        return 'ok'

    task('flaky', flaky, max_retries=3, retry_backoff=0.2,
         retry_on=(ValueError,))
    jobid = env.add('flaky')
    p = env.processor()
    job = env.waitStatus(jobid, 'completed')
    assert job.output == 'ok'
    assert job.retries == 2
    history = job.attempts
    assert [(a['outcome'], a['error']) for a in history] == [
        ('retry', 'ValueError: boom 1'), ('retry', 'ValueError: boom 2'),
        ('completed', None)]
    assert {a['worker'] for a in history} == {p.worker_id + '/1'}
    for a in history:
        assert a['start'] <= a['end']
    # Back-off with jitter: at least half of 0.2s, then of 0.4s.
    assert history[1]['start'] - history[0]['end'] >= 0.1 - 0.01
    assert history[2]['start'] - history[1]['end'] >= 0.2 - 0.01
    assert p.stats['retried'] == 2


def test_a_task_asks_for_a_retry_with_a_delay(env):
    def later(input):
        if len(currentJob().service.jobs[currentJob().jobid].attempts) < 2:
            raise Retry('not yet', delay=0.3)
        return 'now'

    task('later', later, max_retries=1)
    jobid = env.add('later')
    env.processor()
    job = env.waitStatus(jobid, 'completed')
    first, second = job.attempts
    assert (first['outcome'], first['error']) == ('retry', 'not yet')
    assert second['start'] >= first['end'] + 0.3 - 0.01


def test_retries_exhausted_ends_with_error(env):
    def fail(input):
        raise TaskError('no good')

    task('fail', fail, max_retries=1, retry_backoff=0.01,
         retry_on=(TaskError,))
    jobid = env.add('fail')
    env.processor()
    job = env.waitStatus(jobid, 'error')
    assert job.error == 'no good (gave up after 1 retries)'
    assert [a['outcome'] for a in job.attempts] == ['retry', 'error']


def test_conflict_errors_are_retried_a_bounded_number_of_times(env):
    calls = []

    def conflicting(input):
        calls.append(1)
        raise ConflictError('always conflicting')

    task('conflicting', conflicting, max_retries=1, retry_backoff=0.01)
    jobid = env.add('conflicting')
    p = env.processor(attempts=3)
    job = env.waitStatus(jobid, 'error')
    # 3 attempts, queued again once (a retry), 3 attempts, then error:
    # 6 attempts ended in a conflict.
    assert 'gave up after 3 attempts' in job.error
    assert 'ConflictError' in job.error
    assert '(gave up after 1 retries)' in job.error
    assert len(calls) == 6
    assert [a['outcome'] for a in job.attempts] == ['retry', 'error']
    assert p.stats['conflicts'] == 6
    assert env.service.count('processing') == 0


def test_a_conflict_retries_the_task_with_a_clean_job(env):
    calls = []

    def once(input):
        calls.append(currentJob().service.jobs[currentJob().jobid].status)
        if len(calls) == 1:
            raise ConflictError('first time')
        return len(calls)

    task('once', once)
    jobid = env.add('once')
    env.processor()
    job = env.waitStatus(jobid, 'completed')
    assert job.output == 2
    assert calls == ['processing', 'processing']
    assert job.starts == 1 and len(job.attempts) == 1


def test_a_task_that_commits_or_aborts_itself(env):
    def committer(input):
        root = currentJob().service._p_jar.root()
        root['before'] = input
        transaction.commit()
        root['after'] = input
        return 'committed'

    def aborter(input):
        root = currentJob().service._p_jar.root()
        root['aborted'] = input
        transaction.abort()
        return 'aborted'

    task('committer', committer)
    task('aborter', aborter)
    first = env.add('committer', 1)
    second = env.add('aborter', 2)
    env.processor()
    assert env.waitStatus(first, 'completed').output == 'committed'
    assert env.waitStatus(second, 'completed').output == 'aborted'
    assert (env.root['before'], env.root['after']) == (1, 1)
    assert 'aborted' not in env.root
    service = env.service
    assert service.counts()['completed'] == 2
    assert service.count('processing') == 0
    assert len(service.jobs[second].attempts) == 1


# -- progress, stopping -------------------------------------------------------

def test_progress_is_visible_while_the_task_runs(env):
    reported = threading.Event()
    release = threading.Event()

    def work(input):
        currentJob().progress(0.5, 'half way')
        reported.set()
        release.wait(30)
        currentJob().progress(1.0, 'done')
        return 'ok'

    task('work', work)
    jobid = env.add('work')
    p = env.processor()
    assert reported.wait(30)
    job = env.job(jobid)
    assert job.status == 'processing'
    assert job.progress == (0.5, 'half way')
    release.set()
    job = env.waitStatus(jobid, 'completed')
    assert job.progress == (1.0, 'done')
    assert p.stats['conflicts'] == 0      # progress never conflicted


def test_stop_hands_back_what_did_not_finish(env):
    started = threading.Event()
    release = threading.Event()
    task('stubborn', lambda x: started.set() or release.wait(30) and 'done')
    jobid = env.add('stubborn')
    p = env.processor()
    assert started.wait(30)
    assert p.stop(timeout=0.2) == [jobid]
    job = env.job(jobid)
    assert job.status == 'queued'
    assert job.starts == 1          # it ran: the start counts
    assert job.completed is None
    assert job.attempts[-1]['outcome'] == 'handed back'
    release.set()
    env.wait(lambda: p.stats['lost'] == 1, what='the result to be dropped')
    assert env.job(jobid).status == 'queued'
    assert env.job(jobid).output is None


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT])
def test_serve_stops_gracefully_on_a_signal(env, signum):
    started = threading.Event()
    release = threading.Event()

    def job(input):
        started.set()
        release.wait(30)
        return 'done'

    task('job', job)
    jobid = env.add('job')
    waiting = env.add('job')

    p = Processor(env.db, lease=2, poll_interval=0.5)

    def signaller():
        started.wait(30)
        os.kill(os.getpid(), signum)
        # The job ends only once the signal was handled: claiming stopped.
        p._stopping.wait(30)
        release.set()

    threading.Thread(target=signaller, daemon=True).start()
    env.processors.append(p)
    previous = signal.getsignal(signum)
    assert serve(p, grace=30) == 0
    assert not p.running
    # The job that ran finished; the other one was not claimed.
    done, left = sorted((jobid, waiting),
                        key=lambda i: env.job(i).status != 'completed')
    assert env.job(done).status == 'completed'
    assert env.job(done).output == 'done'
    assert env.job(left).status == 'queued'
    assert env.job(left).starts == 0
    assert len(env.job(done).attempts) == 1
    assert signal.getsignal(signum) == previous


def test_serve_exits_at_once_on_a_second_signal(env):
    started = threading.Event()
    release = threading.Event()
    task('block', lambda x: started.set() or release.wait(60))
    env.add('block')

    class HardExit(Exception):
        pass

    def hardExit(code):
        raise HardExit(code)

    p = Processor(env.db, lease=2, poll_interval=0.5)

    def signaller():
        started.wait(30)
        os.kill(os.getpid(), signal.SIGINT)
        # Wait until it was handled: two close signals arrive as one.
        p._stopping.wait(30)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=signaller, daemon=True).start()
    env.processors.append(p)
    # What it was before serve (SIG_IGN when pytest runs in the background).
    previous = signal.getsignal(signal.SIGINT)
    began = time.monotonic()
    try:
        with pytest.raises(HardExit) as info:
            serve(p, grace=30, hardExit=hardExit)
    finally:
        release.set()
    assert info.value.args == (128 + signal.SIGINT,)
    # At once, not after the 30 s grace: the kernel may deliver the second
    # signal to another thread while the main thread waits in stop().
    assert time.monotonic() - began < 15
    assert signal.getsignal(signal.SIGINT) is previous


# -- the tutorial ----------------------------------------------------------

def test_processing_txt():
    failures, tests = doctest.testfile(
        os.path.join(os.path.dirname(HERE), 'processing.txt'),
        module_relative=False,
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert tests > 0
    assert failures == 0

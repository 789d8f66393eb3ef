"""The worker registry (remotetask.registry), and claiming that never
leaves a job behind a long one."""
import threading
import time

import pytest
import transaction

from remotetask import processor as processormod
from remotetask import registry
from remotetask.interfaces import UnknownTaskError
from remotetask.processor import Processor
from remotetask.tests.test_processor import env, task  # noqa: F401


def entries(env, **kw):
    env.tm.begin()
    return registry.entries(env.root['tasks'], **kw)


def test_a_processor_registers_beats_and_removes_itself(env):
    task('echo', lambda x: x)
    p = env.processor(heartbeat=0.2, concurrency=3)
    env.wait(lambda: len(env.service.workers()) == 1)
    (info,) = env.service.workers()
    assert set(info) == set(registry.FIELDS) | {'expires'}
    assert (info['id'], info['kind'], info['concurrency']) == (
        p.worker_id, 'thread', 3)
    assert info['tasks'] == ['echo']
    first = info['heartbeat']
    env.add('echo', 1)
    env.wait(lambda: env.service.workers()[0]['done'] == 1)
    assert env.service.workers()[0]['heartbeat'] > first
    assert env.service.workers()[0]['expires'] == pytest.approx(
        env.service.workers()[0]['heartbeat'] + registry.MISSED * 0.2)
    p.stop()
    assert entries(env, expired=True) == []


def test_a_dead_workers_entry_expires_and_is_pruned(env):
    task('echo', lambda x: x)
    dead = Processor(env.db, heartbeat=0.2, worker_id='dead:1')
    service = env.service
    dead.registration.beat(service, time.time() - 10)   # last beat: long ago
    env.tm.commit()
    assert entries(env) == []                  # not listed: expired
    assert [e.id for e in entries(env, expired=True)] == ['dead:1']
    env.processor(heartbeat=0.2)                # a live one prunes it
    env.wait(lambda: [e.id for e in registry.entries(
        env.root['tasks'], expired=True)] != ['dead:1'])
    assert 'dead:1' not in [e.id for e in entries(env, expired=True)]


def test_a_heartbeat_conflicts_with_nothing(env):
    task('echo', lambda x: x)
    one = Processor(env.db, worker_id='one:1')
    two = Processor(env.db, worker_id='two:2')
    for p in (one, two):     # registered
        env.tm.begin()
        p.registration.beat(env.root['tasks'], time.time())
        env.tm.commit()
    managers = [transaction.TransactionManager() for i in range(3)]
    conns = [env.db.open(tm) for tm in managers]
    services = [c.root()['tasks'] for c in conns]
    now = time.time()
    one.registration.beat(services[0], now)     # beats of two workers ...
    two.registration.beat(services[1], now)
    services[2].add('echo', 1, now=now)         # ... an add ...
    claimed = services[2].claim(now=now + 1)    # ... and a claim
    assert claimed
    for tm in reversed(managers):
        tm.commit()                             # no ConflictError
    for conn in conns:
        conn.close()
    assert len(entries(env)) == 2


def test_add_accepts_the_tasks_of_live_workers_only(env):
    task('echo', lambda x: x)
    p = Processor(env.db, heartbeat=60, worker_id='far:1')
    service = env.service
    p.taskNames = lambda: {'thumbnail'}
    p.registration.beat(service, time.time())
    env.tm.commit()
    jobid = env.add('thumbnail', 'a.png')       # not registered here
    assert env.job(jobid).task == 'thumbnail'
    with pytest.raises(UnknownTaskError) as info:
        env.add('nope')
    assert str(info.value) == ("unknown task 'nope'; available tasks: echo, "
                               "thumbnail")
    # When the worker's entry expires, nobody runs it any more.
    p.registration.beat(env.service, time.time() - 3600)
    env.tm.commit()
    with pytest.raises(UnknownTaskError):
        env.add('thumbnail', 'b.png')
    assert registry.unserved(env.service) == {'thumbnail': 1}
    assert registry.describeUnserved({'thumbnail': 3, 'x': 1}) == [
        "3 jobs of 'thumbnail' waiting; no worker runs it",
        "1 job of 'x' waiting; no worker runs it"]


def test_claimed_ahead_jobs_do_not_wait_behind_a_long_job(env, monkeypatch):
    monkeypatch.setattr(processormod, 'HOLD_SECONDS', 0.5)
    release = threading.Event()
    task('long', lambda x: release.wait(300))
    task('quick', lambda x: x)
    long_id = env.add('long')
    quick = [env.add('quick', i) for i in range(19)]
    # One claim of 20 takes the long job and the 19 quick ones behind it.
    p = env.processor(batch=20, concurrency=2, lease=10.0)
    try:
        env.wait(lambda: all(env.job(i).status == 'completed'
                             for i in quick), timeout=240,
                 what='the quick jobs, while the long one runs')
        assert env.job(long_id).status == 'processing'
    finally:
        release.set()
    env.waitStatus(long_id, 'completed')
    long_job = env.job(long_id)
    for i in quick:
        job = env.job(i)
        # Its own run's times, and its one start.
        assert job.completed < long_job.completed
        assert job.started <= job.completed
        assert job.attempts[-1]['start'] == job.started
        assert job.starts == 1
    assert p.stats['handed_back'] >= 1


def test_a_handed_back_job_is_consistent(env, caplog):
    started = threading.Event()

    def stubborn(x):
        started.set()
        time.sleep(1.5)             # ignores the cancellation
        return x
    task('stubborn', stubborn)
    jobid = env.add('stubborn')
    p = env.processor(lease=10.0)
    assert started.wait(30)
    with caplog.at_level('WARNING', logger='remotetask.worker'):
        handed = p.stop(0.1)
        time.sleep(2.0)             # the task ends, after the hand-back
    assert handed == [jobid]
    job = env.job(jobid)
    assert job.status == 'queued'
    assert job.completed is None    # it did not complete
    assert job.starts == 1          # it ran: the start counts
    assert job.attempts[-1]['outcome'] == 'handed back'
    assert 'result dropped' not in caplog.text
    assert 'its outcome is dropped (it runs again)' in caplog.text


def test_a_claimed_job_handed_back_before_it_ran_keeps_its_start(env):
    task('echo', lambda x: x)
    jobid = env.add('echo', 1)
    service = env.service
    (job,) = service.claim(now=time.time(), worker='w', lease=10)
    assert job.starts == 1
    service.handBack(job)
    env.tm.commit()
    job = env.job(jobid)
    assert (job.status, job.starts, job.started, job.completed) == (
        'queued', 0, None, None)

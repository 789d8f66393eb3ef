"""Retention (remotetask.retention): the policy, expiry in bounded steps
from the status indexes, clean --older-than, the counters; and with a real
processor, expiry while jobs complete."""
import math
import time

import pytest
import transaction
import zope.component

from remotetask import retention
from remotetask.interfaces import (
    CANCELLED, COMPLETED, ERROR, InvalidInputError, InvalidStatusError)
from remotetask.processor import Processor
from remotetask.service import TaskService
from remotetask.structures import SENTINEL
from remotetask.task import SimpleTask
from remotetask.testing import checkConsistency

DAY = 86400


@pytest.fixture
def service():
    zope.component.provideUtility(SimpleTask(lambda input: input),
                                  name='echo')
    zope.component.provideUtility(SimpleTask(lambda input: 1 / 0),
                                  name='boom')
    return TaskService()


def finished(service, count, task='echo', now=0.0):
    ids = [service.add(task, n, now=now) for n in range(count)]
    for jobid in ids:
        service.processNext(jobid=jobid, now=now)
    return ids


# -- the policy ---------------------------------------------------------------

def test_defaults_like_celery(service):
    assert dict(service.retention) == {COMPLETED: DAY, ERROR: 7 * DAY,
                                       CANCELLED: DAY}
    assert service._retention is None       # reading stores nothing


def test_setting_and_resetting(service):
    service.retention['completed'] = 60
    service.retention.update(error=None)
    assert dict(service.retention) == {COMPLETED: 60, ERROR: None,
                                       CANCELLED: DAY}
    del service.retention['completed']
    assert service.retention['completed'] == DAY
    service.retention = {'cancelled': 0}
    assert dict(service.retention) == {COMPLETED: DAY, ERROR: 7 * DAY,
                                       CANCELLED: 0}


@pytest.mark.parametrize('value', [-1, 'a day', math.nan, math.inf, True,
                                   [1]])
def test_bad_retention_values_are_refused_and_nothing_changes(service,
                                                               value):
    service.retention['error'] = 5
    with pytest.raises(InvalidInputError, match="retention of 'completed'"):
        service.retention.update(error=10, completed=value)
    assert service.retention['error'] == 5


def test_retention_of_an_unknown_status_is_refused(service):
    with pytest.raises(InvalidInputError, match='completed, error, cancel'):
        service.retention['queued'] = 5
    with pytest.raises(InvalidInputError, match='mapping'):
        service.retention = 5


def test_task_keep_is_checked():
    SimpleTask(len, keep=0)
    SimpleTask(len, keep=math.inf)
    for bad in (-1, 'x', math.nan):
        with pytest.raises(InvalidInputError, match='keep'):
            SimpleTask(len, keep=bad)


# -- expiry -------------------------------------------------------------------

def test_expire_removes_what_expired_oldest_first(service):
    service.retention = {'completed': 100, 'error': 1000}
    old = finished(service, 5, now=0)
    young = finished(service, 3, now=50)
    errors = finished(service, 2, task='boom', now=0)
    removed, cursors, more = retention.expire(service, now=120)
    assert removed == old and not more
    assert set(service.jobIds(COMPLETED)) == set(young)
    assert set(service.jobIds(ERROR)) == set(errors)
    assert retention.removedCounts(service)['retention'] == 5
    assert service.count() == 5 and not checkConsistency(service)
    removed, cursors, more = retention.expire(service, 1000, cursors)
    assert sorted(removed) == sorted(young + errors)


def test_expire_is_bounded_per_step_and_goes_on_from_its_cursor(service):
    service.retention['completed'] = 0
    ids = finished(service, 25)
    removed, cursors, more = retention.expire(service, 1, limit=10)
    assert removed == ids[:10] and more
    removed, cursors, more = retention.expire(service, 1, cursors, limit=10)
    assert removed == ids[10:20] and more
    removed, cursors, more = retention.expire(service, 1, cursors, limit=10)
    assert removed == ids[20:] and not more
    assert service.count() == 0 and not checkConsistency(service)


def test_expire_scans_a_bounded_number_of_ids(service):
    zope.component.provideUtility(SimpleTask(len, keep=math.inf),
                                  name='kept')
    service.retention['completed'] = 0
    kept = [service.add('kept', 'ab', now=0) for n in range(30)]
    for jobid in kept:
        service.processNext(jobid=jobid, now=0)
    gone = finished(service, 5, now=0)
    seen = []
    cursors = None
    for step in range(10):
        removed, cursors, more = retention.expire(service, 10, cursors,
                                                  scan=8)
        seen += removed
        if not more:
            break
    assert seen == gone and step == 4       # 35 ids, 8 a step
    assert set(service.jobIds(COMPLETED)) == set(kept)


def test_task_keep_overrides_the_service(service):
    zope.component.provideUtility(SimpleTask(len, keep=10), name='short')
    zope.component.provideUtility(SimpleTask(len, keep=math.inf),
                                  name='forever')
    short = service.add('short', 'a', now=0)
    forever = service.add('forever', 'b', now=0)
    normal = service.add('echo', 'c', now=0)
    for jobid in (short, forever, normal):
        service.processNext(jobid=jobid, now=0)
    removed, cursors, more = retention.expire(service, 11)
    assert removed == [short]
    removed, cursors, more = retention.expire(service, 10 * DAY)
    assert removed == [normal]
    assert list(service.jobIds()) == [forever]


def test_retention_none_keeps_for_ever(service):
    service.retention['completed'] = None
    finished(service, 3)
    assert retention.expire(service, 1e9)[0] == []
    assert service.count(COMPLETED) == 3


def test_a_cancelled_job_is_kept_from_its_cancel(service):
    service.retention['cancelled'] = 100
    jobid = service.add('echo', delay=10 * DAY, now=0)
    service.cancel(jobid, now=5 * DAY)
    assert retention.expire(service, 5 * DAY + 50)[0] == []
    assert retention.expire(service, 5 * DAY + 101)[0] == [jobid]


def test_expiry_leaves_the_sentinels_of_the_final_indexes(service):
    # (Removing the first key of a bucket, or emptying it, conflicts with
    # any concurrent change of that bucket: see docs/uptime.md.)
    service.retention['completed'] = 0
    finished(service, 3)
    retention.expire(service, 1)
    made = [part for part in service._index[COMPLETED]._parts
            if part is not None]        # (the others are not made yet)
    assert made and all(SENTINEL in part for part in made)
    assert list(service.jobIds(COMPLETED)) == []
    assert service.count(COMPLETED) == 0
    finished(service, 2, now=2)
    assert len(service.jobIds(COMPLETED)) == 2
    service.clean()
    assert service.count() == 0 and not checkConsistency(service)


# -- clean --------------------------------------------------------------------

def test_clean_older_than_in_steps(service):
    old = finished(service, 7, now=0)
    finished(service, 3, now=100)
    cursors, removed = None, []
    while True:
        step, cursors, more = retention.clean(service, (COMPLETED,),
                                              before=50, limit=3,
                                              cursors=cursors)
        removed += step
        if not more:
            break
    assert removed == old and service.count() == 3
    assert retention.removedCounts(service) == {
        'retention': 0, 'clean': 7, 'delete': 0}
    with pytest.raises(InvalidStatusError, match='only final'):
        retention.clean(service, ('queued',))


def test_delete_is_counted(service):
    jobid = service.add('echo')
    service.delete(jobid)
    assert retention.removedCounts(service)['delete'] == 1


# -- with a real processor ----------------------------------------------------

def test_a_processor_removes_expired_jobs_while_it_runs_jobs(tmp_path):
    # (A FileStorage: it resolves conflicts, as ZEO and RelStorage do.)
    db, tm, service = fileService(tmp_path)
    processor = Processor(db, 'tasks', concurrency=2,
                          maintenance_interval=0.2, poll_interval=0.1)
    processor.start()
    try:
        added = 0
        for burst in range(10):
            for attempt in tm.attempts(20):
                with attempt:
                    for n in range(50):
                        service.add('echo', n)
            added += 50
            time.sleep(0.05)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            tm.begin()
            if processor.stats['expired'] == added and not service.count():
                break
            time.sleep(0.1)
        stats = processor.stats
    finally:
        processor.stop()
    tm.begin()
    assert stats['completed'] == added and stats['failed'] == 0
    assert stats['expired'] == added, stats
    assert service.count() == 0
    assert retention.removedCounts(service)['retention'] == added
    assert not checkConsistency(service)
    tm.abort()
    db.close()


# -- the clock's pace (remotetask.clock, Clock._expire) -----------------------

def fileService(tmp_path, completed=0):
    """A service on a FileStorage with the task echo, completed jobs kept
    0 s, and ``completed`` jobs already completed; (db, tm, service)."""
    import ZODB.FileStorage
    zope.component.provideUtility(SimpleTask(lambda input: input),
                                  name='echo')
    db = ZODB.DB(ZODB.FileStorage.FileStorage(str(tmp_path / 'Data.fs')))
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    conn.root()['tasks'] = service = TaskService()
    service.__name__ = 'tasks'
    service.retention['completed'] = 0
    tm.commit()
    for start in range(0, completed, 1000):
        with tm:
            finished(service, min(1000, completed - start), now=0.0)
    return db, tm, service


class FakeMonotonic:
    """``time`` for remotetask.clock: monotonic() and thread_time() move
    ``step`` seconds at each call."""

    def __init__(self, step):
        self.now = 1000.0
        self.step = step

    def monotonic(self):
        self.now += self.step
        return self.now

    thread_time = monotonic


@pytest.fixture
def steps(monkeypatch):
    """Each expiry step's (limit, scan, removed), as the clock ran it."""
    seen = []
    real = retention.expire

    def expire(service, now, cursors=None, limit=retention.BATCH,
               scan=retention.SCAN):
        removed, after, more = real(service, now, cursors, limit, scan)
        seen.append((limit, scan, len(removed)))
        return removed, after, more
    monkeypatch.setattr(retention, 'expire', expire)
    return seen


def test_one_tick_removes_many_steps_when_behind(tmp_path, monkeypatch,
                                                 steps):
    from remotetask import clock
    db, tm, service = fileService(tmp_path, 5000)
    monkeypatch.setattr(clock, 'time', FakeMonotonic(0.001))
    processor = Processor(db, 'tasks', concurrency=1)
    ptm = transaction.TransactionManager()
    processor._expire(ptm, db.open(ptm), time.time())
    # One run of a tick: more than one step's worth, every step bounded,
    # the steps growing while each found a full batch.
    assert len(steps) > 1
    assert sum(n for limit, scan, n in steps) > retention.BATCH
    assert all(n <= limit <= retention.MAX_BATCH and
               scan == limit * retention.SCAN_FACTOR
               for limit, scan, n in steps)
    assert steps[1][0] > steps[0][0]
    tm.begin()
    assert service.count('completed') == 5000 - processor.stats['expired']
    assert not checkConsistency(service)
    tm.abort()
    db.close()


def test_a_tick_stops_at_its_share_of_time_and_comes_back(tmp_path,
                                                          monkeypatch, steps):
    from remotetask import clock
    db, tm, service = fileService(tmp_path, 5000)
    # Each step "takes" 0.5 s: over the share of a 5 s interval at once.
    monkeypatch.setattr(clock, 'time', FakeMonotonic(0.5))
    processor = Processor(db, 'tasks', concurrency=1)
    ptm = transaction.TransactionManager()
    conn = db.open(ptm)
    processor._expire(ptm, conn, time.time())
    assert len(steps) < 5
    assert processor._expireBehind     # the loop comes back at next tick
    first = processor.stats['expired']
    assert first < 5000
    for n in range(100):
        if not processor._expireBehind:
            break
        processor._expire(ptm, conn, time.time())
    assert processor.stats['expired'] == 5000
    assert not processor._expireBehind
    db.close()


def test_a_conflicting_step_halves_the_next_and_expiry_goes_on(
        tmp_path, monkeypatch):
    from ZODB.POSException import ConflictError
    from remotetask import clock
    db, tm, service = fileService(tmp_path, 2000)
    monkeypatch.setattr(clock, 'time', FakeMonotonic(0.001))
    real = retention.expire
    limits = []

    def expire(service, now, cursors=None, limit=retention.BATCH,
               scan=retention.SCAN):
        limits.append(limit)
        if len(limits) == 2:
            raise ConflictError('made up')
        return real(service, now, cursors, limit, scan)
    monkeypatch.setattr(retention, 'expire', expire)
    processor = Processor(db, 'tasks', concurrency=1)
    ptm = transaction.TransactionManager()
    processor._expire(ptm, db.open(ptm), time.time())
    assert limits[2] == limits[1] // 2
    assert processor.stats['conflicts'] == 1
    assert processor.stats['expired'] == 2000
    db.close()


def test_only_the_first_live_worker_expires(tmp_path):
    from remotetask import registry
    db, tm, service = fileService(tmp_path)
    first = Processor(db, 'tasks', concurrency=1)
    second = Processor(db, 'tasks', concurrency=1)
    now = time.time()
    with tm:
        for p in (first, second):
            p.registration.beat(service, now)
    keys = sorted([first.registration.key, second.registration.key])
    tm.begin()
    assert registry.first(service, keys[0], now)
    assert not registry.first(service, keys[1], now)
    assert registry.first(service, 'not registered', now)
    # Once the first one's entry expired, the next one takes over.
    later = now + 3600
    assert registry.first(service, keys[1], later)
    tm.abort()
    db.close()


def test_producer_adds_and_expiry_steps_both_commit(tmp_path):
    # A step that empties buckets of a lane's jobs tree changes that tree's
    # node, as a producer's bucket splits do: that conflict is not
    # resolved (docs/uptime.md, "Retention's pace"); the producer's retry
    # commits, and nothing is lost or left inconsistent.
    db, tm, service = fileService(tmp_path, 3000)
    expirer = transaction.TransactionManager()
    econn = db.open(expirer)
    for round in range(3):
        tries = 0
        for attempt in tm.attempts(5):
            with attempt:
                tries += 1
                for n in range(200):
                    service.add('echo', n)
                if tries == 1:
                    with expirer:
                        removed, cursors, more = retention.expire(
                            econn.root()['tasks'], time.time(), limit=500)
                    assert len(removed) == 500
    tm.begin()
    assert service.count('completed') == 1500
    assert service.count('queued') == 600
    assert retention.removedCounts(service)['retention'] == 1500
    assert not checkConsistency(service)
    tm.abort()
    db.close()

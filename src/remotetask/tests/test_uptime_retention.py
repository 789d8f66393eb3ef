"""Retention (remotetask.retention): the policy, expiry in bounded steps
from the status indexes, clean --older-than, the counters; and with a real
processor, expiry while jobs complete."""
import math
import time

import pytest
import transaction
import ZODB
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
    conn.close()
    db.close()

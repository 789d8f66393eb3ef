"""Bulk actions in bounded steps (remotetask.bulk): limits, the scan bound,
the cursor, dry runs, bad input; steps in transactions of their own while
a processor runs jobs."""
import math
import threading
import time

import pytest
import transaction
import ZODB
import ZODB.FileStorage
import zope.component

from remotetask import bulk, db as dbmod
from remotetask.interfaces import (
    CANCELLED, COMPLETED, ERROR, QUEUED, InvalidInputError,
    InvalidStatusError)
from remotetask.processor import Processor
from remotetask.service import TaskService
from remotetask.task import SimpleTask
from remotetask.testing import checkConsistency


@pytest.fixture
def service():
    zope.component.provideUtility(SimpleTask(lambda x: x), name='echo')
    zope.component.provideUtility(SimpleTask(lambda x: 1 / 0), name='boom')
    return TaskService()


def failed(service, count, queue='default', task='boom'):
    ids = [service.add(task, n, queue=queue, now=0) for n in range(count)]
    for jobid in ids:
        service.processNext(jobid=jobid, now=1)
    assert all(service.jobs[jobid].status == ERROR for jobid in ids)
    return ids


def steps(stepFunc, service, limit, cursor=None, **kw):
    """The counts of the steps from ``cursor`` until the walk ends."""
    counts = []
    while True:
        result = stepFunc(service, limit=limit, cursor=cursor, **kw)
        counts.append(result.count)
        cursor = result.cursor
        if not result.more:
            return counts


def test_a_step_acts_on_at_most_limit_jobs(service):
    ids = failed(service, 35)
    first = bulk.retryStep(service, limit=10, now=2)
    assert first.count == 10 and first.more
    assert service.count(ERROR) == 25 and service.count(QUEUED) == 10
    # The oldest first, and the cursor is the last id looked at.
    assert [service.jobs[j].status for j in ids[:10]] == [QUEUED] * 10
    assert first.cursor == {ERROR: ids[9]}
    counts = [first.count] + steps(bulk.retryStep, service, 10,
                                   cursor=first.cursor)
    assert counts == [10, 10, 10, 5]
    assert service.count(ERROR) == 0
    assert not checkConsistency(service)


def test_limit_reached_on_the_last_job_says_no_more(service):
    failed(service, 10)
    result = bulk.retryStep(service, limit=10)
    assert (result.count, result.more, result.cursor) == (
        10, False, {ERROR: None})
    # A finished cursor looks at nothing.
    failed(service, 3)
    assert bulk.retryStep(service, cursor=result.cursor).count == 0


def test_a_step_with_few_matches_looks_at_a_bounded_number_of_ids(service):
    others = failed(service, 60, queue='b')
    mine = failed(service, 3, queue='a')
    result = bulk.retryStep(service, queue='a', limit=2)
    # limit 2: 20 ids looked at (the cursor is the last), none of queue
    # 'a' among them.
    assert result.count == 0 and result.more
    assert result.cursor == {ERROR: others[19]}
    counts = [result.count] + steps(bulk.retryStep, service, 2,
                                    cursor=result.cursor, queue='a')
    assert sum(counts) == 3
    assert [service.jobs[j].status for j in mine] == [QUEUED] * 3
    assert service.count(ERROR) == 60


def test_the_cursor_ends_a_walk_whose_jobs_fail_again(service):
    # A retried job that fails again before the walk ends is behind the
    # cursor: the walk does not go round for ever.
    ids = failed(service, 6)
    cursor, total = None, 0
    for n in range(10):
        result = bulk.retryStep(service, limit=2, cursor=cursor, now=2)
        total += result.count
        for job in service.claim(now=3, limit=10):
            service._fail(job, 'again', None, now=3)
        cursor = result.cursor
        if not result.more:
            break
    assert total == 6 and n == 2     # three steps
    assert [service.jobs[j].status for j in ids] == [ERROR] * 6


def test_purge_and_delete_steps(service):
    waiting = [service.add('echo', n, queue='q', now=0) for n in range(12)]
    other = service.add('echo', 'x', queue='r', now=0)
    assert steps(bulk.purgeStep, service, 5, queue='q') == [5, 5, 2]
    assert [service.jobs[j].status for j in waiting] == [CANCELLED] * 12
    assert service.jobs[other].status == QUEUED
    assert steps(bulk.deleteStep, service, 5, status=CANCELLED,
                 queue='q', dry_run=True) == [5, 5, 2]
    assert service.count(CANCELLED) == 12
    assert steps(bulk.deleteStep, service, 5, status=[CANCELLED]) == \
        [5, 5, 2]
    assert service.count() == 1
    assert not checkConsistency(service)


def test_delete_before(service):
    old = [service.add('echo', n, now=0) for n in range(4)]
    for jobid in old:
        service.processNext(jobid=jobid, now=10)
    new = [service.add('echo', n, now=100) for n in range(3)]
    for jobid in new:
        service.processNext(jobid=jobid, now=110)
    assert bulk.deleteStep(service, status=COMPLETED, before=50,
                           limit=100).count == 4
    assert sorted(service.jobs.keys()) == new


def test_dry_run_counts_and_changes_nothing(service):
    failed(service, 7, queue='a')
    failed(service, 5, queue='b')
    # No filter: the counters, at once.
    assert bulk.retryStep(service, dry_run=True, limit=1) == (
        12, {ERROR: None}, False)
    # A filter: steps (3 matches, or 30 ids looked at, each).
    assert steps(bulk.retryStep, service, 3, queue='a', dry_run=True) \
        == [3, 3, 1]
    assert service.count(ERROR) == 12


def test_the_one_transaction_functions_keep_their_meaning(service):
    failed(service, 8)
    assert service.retryAll(dry_run=True) == 8
    assert service.retryAll(limit=3) == 3
    assert service.count(ERROR) == 5
    assert service.retryAll() == 5
    assert service.purge(limit=2) == 2
    assert service.deleteJobs(status=QUEUED) == 6


@pytest.mark.parametrize('limit', [0, -1, 1.5, '10', True, None,
                                   bulk.MAX_LIMIT + 1, math.inf])
def test_bad_limits(service, limit):
    with pytest.raises(InvalidInputError, match='limit must be an integer '
                       'from 1 to 10000'):
        bulk.checkLimit(limit)
    if limit not in (None, bulk.MAX_LIMIT + 1, math.inf):
        with pytest.raises(InvalidInputError, match='limit must be'):
            bulk.retryStep(service, limit=limit)


@pytest.mark.parametrize('limit', [0, -3, 2.0, 'all', False])
def test_bad_limits_of_the_service(service, limit):
    with pytest.raises(InvalidInputError, match='limit must be'):
        service.deleteJobs(limit=limit)


@pytest.mark.parametrize('cursor, message', [
    ('abc', 'cursor must be the cursor of the previous step'),
    ([1, 2], 'cursor must be'),
    ({'queued': 3}, "'queued' is not a status of this action"),
    ({'error': -1}, 'must be a job id or null'),
    ({'error': '7'}, 'must be a job id or null'),
    ({'error': True}, 'must be a job id or null'),
])
def test_bad_cursors(service, cursor, message):
    with pytest.raises(InvalidInputError, match=message):
        bulk.retryStep(service, cursor=cursor)


def test_bad_statuses_and_before(service):
    with pytest.raises(InvalidStatusError, match='processing'):
        bulk.deleteStep(service, status=['completed', 'processing'])
    with pytest.raises(InvalidStatusError, match="'nope'"):
        bulk.deleteStep(service, status='nope')
    with pytest.raises(InvalidInputError, match='before must be epoch'):
        bulk.deleteStep(service, before=math.nan)


# -- steps in transactions of their own, while a processor runs ------------------

def test_a_conflict_retries_only_its_step(tmp_path):
    from ZODB.POSException import ConflictError
    zope.component.provideUtility(SimpleTask(lambda x: 1 / 0), name='boom')
    db = ZODB.DB(ZODB.FileStorage.FileStorage(str(tmp_path / 'Data.fs')))
    runner = dbmod.ServiceRunner(db, 'tasks')
    ids = runner(lambda s: failed(s, 25))
    calls = []

    def flaky(service, cursor=None, **kw):
        calls.append(cursor)
        result = bulk.retryStep(service, cursor=cursor, **kw)
        if len(calls) == 2:         # the second step, after its changes
            raise ConflictError()
        return result
    assert bulk.run(runner, flaky, batch=10) == 25
    # The second step ran twice from the same cursor; the first once.
    assert calls == [None, {ERROR: ids[9]}, {ERROR: ids[9]},
                     {ERROR: ids[19]}]
    assert runner(lambda s: s.count(QUEUED)) == 25
    db.close()


def test_steps_while_a_processor_runs_jobs(tmp_path):
    """Completed jobs are deleted, and failed ones retried, in steps of
    20 while a processor completes a stream of new jobs and fails the
    retried ones again: every step commits after a few retries at most,
    and the retried jobs are retried once (the cursor)."""
    zope.component.provideUtility(SimpleTask(lambda x: x), name='echo')
    zope.component.provideUtility(SimpleTask(lambda x: 1 / 0), name='boom')
    db = ZODB.DB(ZODB.FileStorage.FileStorage(str(tmp_path / 'Data.fs')))
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    conn.root()['tasks'] = service = TaskService()
    service.__name__ = 'tasks'
    # (Jobs ended in 1970 would have expired: the processor's retention
    # would remove them.)
    service.retention = {COMPLETED: None, ERROR: None}
    old = [service.add('echo', n, now=0) for n in range(200)]
    boom = [service.add('boom', n, now=0) for n in range(60)]
    for jobid in old + boom:
        service.processNext(jobid=jobid, now=1)
    tm.commit()
    processor = Processor(db, 'tasks', concurrency=2, poll_interval=0.05)
    processor.start()
    stop = threading.Event()

    def produce():
        ptm = transaction.TransactionManager()
        pconn = db.open(ptm)
        try:
            while not stop.is_set():
                for attempt in ptm.attempts(20):
                    with attempt:
                        mine = pconn.root()['tasks']
                        for n in range(10):
                            mine.add('echo', n)
                time.sleep(0.02)
        finally:
            pconn.close()
    producer = threading.Thread(target=produce)
    producer.start()
    runner = dbmod.ServiceRunner(db, 'tasks', attempts=10)
    calls = {}

    def counted(stepFunc):
        def call(service, cursor, **kw):
            key = repr(cursor)
            calls[key] = calls.get(key, 0) + 1
            return stepFunc(service, cursor=cursor, **kw)
        return call
    try:
        time.sleep(0.2)
        deleted = bulk.run(runner, counted(bulk.deleteStep), batch=20,
                           status=COMPLETED)
        retried = bulk.run(runner, counted(bulk.retryStep), batch=20,
                           task='boom')
    finally:
        stop.set()
        producer.join()
        processor.stop()
    tm.begin()
    assert deleted >= 200
    assert not any(jobid in service.jobs for jobid in old)
    assert retried == 60
    assert max(calls.values()) <= 4, calls
    assert not checkConsistency(service)
    tm.abort()
    conn.close()
    db.close()

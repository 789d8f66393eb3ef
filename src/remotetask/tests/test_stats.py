"""Statistics kept in the database (remotetask.stats): what is counted,
the rings, the percentiles, and concurrent writers that never conflict."""
import pytest
import transaction
import ZODB
import ZODB.FileStorage
import zope.component

from remotetask import stats
from remotetask.interfaces import COMPLETED, ERROR, Retry, TaskError
from remotetask.service import TaskService
from remotetask.task import SimpleTask

T0 = 1_800_000_000.0        # a minute's start (T0 % 3600 == 0)


def register(name, func, **policy):
    zope.component.provideUtility(SimpleTask(func, **policy), name=name)


def failing(input):
    raise TaskError('bad input %r' % (input,))


def retrying(input):
    raise Retry('later', delay=60)


@pytest.fixture
def service():
    register('echo', lambda input: input)
    register('fail', failing)
    register('again', retrying, max_retries=1)
    return TaskService()


def runAt(service, task, input=None, start=T0, seconds=0.0):
    """Add a job, claim it at ``start``, end its run ``seconds`` later."""
    jobid = service.add(task, input, now=start)
    [job] = service.claim(now=start)
    assert job.id == jobid
    service.run(job, now=start + seconds)
    return jobid


def rows(service, now):
    return {row['task']: row for row in stats.summary(service, now)['tasks']}


def test_runs_are_counted_per_task_with_their_run_times(service):
    for i in range(10):
        runAt(service, 'echo', i, T0 + i, seconds=0.1 * (i + 1))
    failed = runAt(service, 'fail', 'x', T0 + 20, seconds=2)
    again = runAt(service, 'again', None, T0 + 30, seconds=1)
    [job] = service.claim(now=T0 + 100)                 # its retry
    service.run(job, now=T0 + 101)
    table = rows(service, T0 + 120)
    echo = table['echo']
    assert (echo['runs'], echo['completed'], echo['failed'],
            echo['retried']) == (10, 10, 0, 0)
    assert echo['failure_rate'] == 0
    # 0.1 .. 1.0 s: the median about 0.5, p95 about 1.0 (bins <= 1/3 wide)
    assert 0.4 <= echo['p50'] <= 0.65
    assert 0.85 <= echo['p95'] <= 1.0
    assert echo['mean'] == pytest.approx(0.55)
    assert echo['last_failure'] is None
    fail = table['fail']
    assert (fail['runs'], fail['failed'], fail['failure_rate']) == (1, 1, 1)
    assert fail['last_failure']['job'] == failed
    assert fail['last_failure']['at'] == T0 + 22
    assert 'bad input' in fail['last_failure']['error']
    # 'again' was retried once, then gave up (max_retries=1): a failure
    assert (table['again']['retried'], table['again']['failed'],
            table['again']['runs']) == (1, 1, 2)
    assert table['again']['last_failure']['job'] == again
    assert 'gave up after 1 retries' in table['again']['last_failure']['error']


def test_series_per_minute_and_per_hour(service):
    runAt(service, 'echo', 1, T0 + 5, 1)
    runAt(service, 'echo', 2, T0 + 65, 1)
    runAt(service, 'echo', 3, T0 + 70, 3)
    runAt(service, 'fail', 4, T0 + 3660, 1)
    service.add('echo', 'waits', now=T0 + 3660, delay=10 ** 6)
    # sees one job waiting (the last sample is more than SAMPLE s old)
    runAt(service, 'fail', 5, T0 + 3660 + stats.SAMPLE + 5, 1)
    minutes = stats.series(service, stats.MINUTE, 60, T0 + 3720)
    assert len(minutes['time']) == 60
    assert minutes['time'][-1] == T0 + 3720
    # the last hour: the minutes of T0 and T0 + 60 are older than that
    assert sum(minutes['completed']) == 0
    # both failures ended in the minute of T0 + 3660
    assert minutes['failed'][-2:] == [2, 0]
    assert minutes['waiting'][-2:] == [1, None]
    hours = stats.series(service, stats.HOUR, 24, T0 + 3720)
    assert hours['time'][-2:] == [T0, T0 + 3600]
    assert hours['completed'][-2:] == [3, 0]
    assert hours['failed'][-2:] == [0, 2]
    p95 = hours['runtime']['echo']['p95']
    assert p95[-1] is None and 2 < p95[-2] <= 3
    # per minute, at T0 + 120
    early = stats.series(service, stats.MINUTE, 60, T0 + 120)
    assert early['completed'][-3:] == [1, 2, 0]
    assert 0.75 < early['runtime']['echo']['p50'][-3] <= 1.0   # its bin


def test_old_periods_are_dropped(service):
    runAt(service, 'echo', 1, T0, 1)
    slot = service._stats.minutes[int(T0 // 60) % stats.MINUTES]
    assert slot.stamp == T0 // 60
    # A whole ring later, the same slot is emptied for its new minute.
    later = T0 + stats.MINUTES * 60
    runAt(service, 'fail', 2, later, 1)
    assert slot.stamp == later // 60
    assert {task for task, name in slot.counts} == {'fail'}
    # A day later nothing of the first day is counted; the totals keep it.
    assert rows(service, T0 + 25 * 3600)['echo']['runs'] == 0
    assert stats.totals(service)['echo']['completed'] == 1
    # A run too old for the ring (a fake clock going back) counts in the
    # totals only.
    runAt(service, 'echo', 3, T0, 1)
    assert slot.stamp == later // 60
    assert stats.totals(service)['echo']['completed'] == 2


def test_a_service_made_before_statistics_gets_them(service):
    del service._stats
    assert stats.state(service) is None
    assert stats.summary(service, T0)['tasks'] == [
        dict(stats._row(name, {}), waiting=0)
        for name in []]      # no task has jobs yet
    runAt(service, 'echo', 1, T0, 1)
    assert rows(service, T0)['echo']['completed'] == 1


def test_waiting_per_task(service):
    service.add('echo', 1, now=T0)
    service.add('echo', 2, now=T0, delay=60)
    service.add('fail', 3, now=T0, startLater=True)
    table = rows(service, T0)
    assert table['echo']['waiting'] == 2
    assert table['fail']['waiting'] == 0


def test_percentile():
    assert stats.percentile({}, 0.5) is None
    one = {stats.binOf(2.0): 1}
    assert 1.5 < stats.percentile(one, 0.5) <= 2.0
    assert stats.percentile({len(stats.EDGES): 3}, 0.5) == stats.EDGES[-1]
    assert stats.binOf(0) == 0 and stats.binOf(1e9) == len(stats.EDGES)
    assert all(b / a <= 1.34 for a, b in zip(stats.EDGES, stats.EDGES[1:]))


# -- conflict resolution: a pure function, then with two connections ----------

def state(stamp, counts, failures=None, waiting=None):
    return {'stamp': stamp, 'counts': counts, 'failures': failures or {},
            'waiting': waiting}


def test_resolve_slot_adds_both_changes():
    old = state(7, {('a', 'completed'): 2})
    committed = state(7, {('a', 'completed'): 3, ('a', 4): 1},
                      {'a': (10.0, 5, 'x')}, (10.0, 4))
    new = state(7, {('a', 'completed'): 4, ('b', 'failed'): 1},
                {'a': (11.0, 6, 'y')}, (9.0, 8))
    merged = stats.resolveSlot(old, committed, new)
    assert merged['counts'] == {('a', 'completed'): 5, ('a', 4): 1,
                                ('b', 'failed'): 1}
    assert merged['failures'] == {'a': (11.0, 6, 'y')}
    assert merged['waiting'] == (10.0, 4)


def test_resolve_slot_two_first_writers_of_a_period():
    old = state(3, {('a', 'completed'): 50})          # a ring ago
    committed = state(67, {('a', 'completed'): 1})
    new = state(67, {('a', 'completed'): 1, ('a', 'failed'): 1})
    merged = stats.resolveSlot(old, committed, new)
    assert merged['stamp'] == 67
    assert merged['counts'] == {('a', 'completed'): 2, ('a', 'failed'): 1}


def test_resolve_slot_refuses_writers_of_different_periods():
    from ZODB.POSException import ConflictError
    with pytest.raises(ConflictError):
        stats.resolveSlot(state(3, {}), state(67, {('a', 'completed'): 1}),
                          state(3, {('a', 'completed'): 1}))


def test_resolve_totals():
    merged = stats.resolveTotals(
        {'counts': {}, 'since': 1.0},
        {'counts': {('a', 'completed'): 1, ('a', 'seconds'): 0.5},
         'since': 1.0},
        {'counts': {('a', 'completed'): 1, ('a', 'seconds'): 0.25},
         'since': 1.0})
    assert merged == {'counts': {('a', 'completed'): 2, ('a', 'seconds'): 0.75},
                      'since': 1.0}


@pytest.fixture
def db(tmp_path):
    db = ZODB.DB(ZODB.FileStorage.FileStorage(str(tmp_path / 'Data.fs')))
    yield db
    db.close()


def _twoWriters(db, now, outcomes):
    """Two connections each end a run at ``now`` concurrently (the jobs
    are added and claimed first; each connection ends its job's attempt
    (``_settle``, which calls ``stats.record``), not the status indexes:
    only the job and the statistics are written concurrently)."""
    with db.transaction() as conn:
        svc = conn.root()['service']
        ids = [svc.add(task, None, now=now - 1) for task, outcome in outcomes]
        claimed = svc.claim(now=now - 1, limit=len(ids))
        assert sorted(job.id for job in claimed) == sorted(ids)
    managers = [transaction.TransactionManager() for _ in outcomes]
    conns = [db.open(tm) for tm in managers]
    for conn, jobid, (task, outcome) in zip(conns, ids, outcomes):
        svc = conn.root()['service']
        svc._settle(svc.jobs[jobid], now, outcome, 'boom')
    for tm in managers:
        tm.commit()         # the second commit resolves the conflicts
    for conn in conns:
        conn.close()


def test_concurrent_ends_do_not_conflict(service, db):
    with db.transaction() as conn:
        conn.root()['service'] = TaskService()
    # The same minute and hour: first writers of both (the slots are new).
    _twoWriters(db, T0 + 10, [('echo', COMPLETED), ('echo', COMPLETED)])
    # Two more in that minute, one of a task neither has seen (totals).
    _twoWriters(db, T0 + 20, [('echo', ERROR), ('fail', ERROR)])
    # A whole ring later: both first writers empty the same slot.
    _twoWriters(db, T0 + stats.MINUTES * 60,
                [('echo', COMPLETED), ('fail', COMPLETED)])
    with db.transaction() as conn:
        svc = conn.root()['service']
        totals = stats.totals(svc)
        assert totals['echo']['completed'] == 3
        assert totals['echo']['failed'] == 1
        assert totals['fail']['failed'] == 1
        assert totals['fail']['completed'] == 1
        assert sum(totals['echo']['bins'].values()) == 4
        minute = stats.series(svc, stats.MINUTE, 60,
                              T0 + stats.MINUTES * 60)
        assert minute['completed'][-1] == 2
        hour = stats.series(svc, stats.HOUR, 24, T0 + 30)
        assert (hour['completed'][-1], hour['failed'][-1]) == (2, 2)


def test_counted_when_the_transaction_commits(service, db):
    with db.transaction() as conn:
        conn.root()['service'] = TaskService()
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    svc = conn.root()['service']
    for i in range(3):
        svc.add('echo', i, now=T0)
    tm.commit()
    # Three runs in one transaction (as a processor's group): counted once
    # each, at the commit; nothing before.
    for job in svc.claim(now=T0, limit=3):
        svc.run(job, now=T0 + 1)
    assert stats.totals(svc) == {}
    tm.commit()
    assert stats.totals(svc)['echo']['completed'] == 3
    # An aborted transaction counts nothing; an end rolled back to a
    # savepoint neither.
    svc.add('echo', 9, now=T0)
    svc.add('echo', 10, now=T0)
    tm.commit()
    [job] = svc.claim(now=T0)
    svc.run(job, now=T0 + 1)
    tm.abort()
    [job] = svc.claim(now=T0)
    savepoint = tm.savepoint()
    svc.run(job, now=T0 + 1)
    savepoint.rollback()
    [other] = svc.claim(now=T0)
    assert other.id != job.id
    svc.run(other, now=T0 + 2)
    tm.commit()
    assert stats.totals(svc)['echo']['completed'] == 4
    conn.close()

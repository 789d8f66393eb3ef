"""Workflows in one process: after=, chain, group, cancel/retry/delete down
the graph, bad input, and the fan-in counter's conflict resolution."""
import threading

import pytest
import transaction
import ZODB
import ZODB.FileStorage
import zope.component
from ZODB.POSException import ConflictError

from remotetask import workflows
from remotetask.interfaces import (
    CANCELLED, COMPLETED, DEFERRED, ERROR, QUEUED, STATUSES,
    InvalidInputError, InvalidStatusError, TaskError,
    UnknownTaskError)
from remotetask.job import currentJob
from remotetask.service import TaskService
from remotetask.task import SimpleTask
from remotetask.testing import checkConsistency


def register(name, func):
    zope.component.provideUtility(SimpleTask(func), name=name)


def fail(input):
    raise TaskError('no good: %r' % (input,))


@pytest.fixture
def service():
    register('echo', lambda input: input)
    register('inc', lambda input: (input or 0) + 1)
    register('fail', fail)
    register('parents', lambda input: currentJob().parentResults())
    register('sum', lambda input: sum(input))
    return TaskService()


def consistent(service):
    assert checkConsistency(service) == []
    assert workflows.check(service) == []


def test_deferred_is_a_status_counted_and_indexed(service):
    assert DEFERRED == 'deferred' and DEFERRED in STATUSES
    first = service.add('echo', 1)
    child = service.add('echo', 2, after=first)
    assert service.getStatus(child) == DEFERRED
    assert service.count(DEFERRED) == 1
    assert list(service.jobIds(DEFERRED)) == [child]
    assert list(service.jobIds(DEFERRED, task='echo')) == [child]
    assert service.counts()[DEFERRED] == 1
    assert [jobid for eta, jobid in service.queue()] == [first]
    consistent(service)


def test_child_is_queued_when_its_last_parent_completes(service):
    a = service.add('echo', 'a')
    b = service.add('echo', 'b')
    child = service.add('parents', after=(a, b))
    service.processNext(jobid=a)
    assert service.getStatus(child) == DEFERRED
    assert workflows.describe(service, service.jobs[child])['waiting_on'] \
        == [b]
    service.processNext(jobid=b)
    assert service.getStatus(child) == QUEUED
    service.process()
    assert service.getResult(child) == ['a', 'b']
    consistent(service)


def test_completed_parent_counts_as_done(service):
    a = service.add('echo', 'a')
    service.process()
    child = service.add('parents', after=[a])
    assert service.getStatus(child) == QUEUED
    service.process()
    assert service.getResult(child) == ['a']


def test_task_context_lists_parents(service):
    seen = []
    register('look', lambda input: seen.append(currentJob().parents))
    a = service.add('echo', 1)
    b = service.add('echo', 2)
    service.add('look', after=(b, a, b))       # duplicates dropped
    service.process()
    assert seen == [(b, a)]


def test_chain_passes_results(service):
    ids = service.chain([('inc', 1), ('inc', None), ('inc', None)])
    assert [service.getStatus(i) for i in ids] == [QUEUED, DEFERRED,
                                                  DEFERRED]
    service.process()
    assert [service.getResult(i) for i in ids] == [2, 3, 4]
    assert service.jobs[ids[2]].input == 3
    consistent(service)


def test_chain_step_with_input_keeps_it(service):
    ids = service.chain([('inc', 1), ('inc', 10), ('parents', None)])
    service.process()
    assert [service.getResult(i) for i in ids] == [2, 11, [11]]


def test_chain_after_existing_jobs(service):
    first = service.add('echo', 5)
    ids = service.chain([('parents', None), ('sum', None)], after=first)
    service.process()
    assert service.getResult(ids[0]) == [5]
    assert service.getResult(ids[1]) == 5


def test_group_then_gets_results_in_order(service):
    ids, then = service.group([('inc', n) for n in range(20)],
                              then=('sum', None))
    assert service.getStatus(then) == DEFERRED
    assert service.jobs[then]._countdown() == 20
    # Complete them in reverse order: the then still gets step order.
    for jobid in reversed(ids):
        service.processNext(jobid=jobid)
    assert service.getStatus(then) == QUEUED
    assert service.jobs[then].input == list(range(1, 21))
    service.process()
    assert service.getResult(then) == sum(range(1, 21))
    consistent(service)


def test_group_without_then(service):
    ids, then = service.group([('echo', 1), ('echo', 2)])
    assert then is None and len(ids) == 2
    assert all(service.getStatus(i) == QUEUED for i in ids)


def test_group_then_with_its_own_input(service):
    ids, then = service.group([('echo', 1)], then=('echo', 'mine'))
    service.process()
    assert service.getResult(then) == 'mine'


def test_failing_parent_cancels_children_down_the_graph(service):
    ids = service.chain([('fail', 'x'), ('echo', None), ('echo', None),
                         ('echo', None)])
    service.process()
    statuses = [service.getStatus(i) for i in ids]
    assert statuses == [ERROR, CANCELLED, CANCELLED, CANCELLED]
    errors = [service.getError(i) for i in ids[1:]]
    assert errors[0] == ("cancelled: parent job %s ended in error: "
                         "no good: 'x'" % ids[0])
    assert errors[1] == ("cancelled: parent job %s was cancelled; first "
                         "cause: parent job %s ended in error: no good: 'x'"
                         % (ids[1], ids[0]))
    assert errors[2] == ("cancelled: parent job %s was cancelled; first "
                         "cause: parent job %s ended in error: no good: 'x'"
                         % (ids[2], ids[0]))
    consistent(service)


def test_one_failed_job_of_a_group_cancels_the_then(service):
    ids, then = service.group([('echo', 1), ('fail', 2), ('echo', 3)],
                              then=('sum', None))
    service.process()
    assert service.getStatus(then) == CANCELLED
    assert 'parent job %s ended in error' % ids[1] in service.getError(then)


def test_child_of_failed_parent_is_born_cancelled(service):
    bad = service.add('fail', 1)
    service.process()
    child = service.add('echo', after=bad)
    assert service.getStatus(child) == CANCELLED
    assert 'parent job %s ended in error' % bad in service.getError(child)


def test_cancelling_a_parent_cancels_children(service):
    a = service.add('echo', 1)
    b, c = service.chain([('echo', None), ('echo', None)], after=a)
    service.cancel(a)
    assert service.getError(b) == 'cancelled: parent job %s was cancelled' % a
    assert service.getStatus(c) == CANCELLED
    consistent(service)


def test_a_deferred_job_can_be_cancelled(service):
    a = service.add('echo', 1)
    b = service.add('echo', after=a)
    c = service.add('echo', after=b)
    service.cancel(b)
    assert service.getStatus(c) == CANCELLED
    service.process()
    assert service.getStatus(a) == COMPLETED
    assert service.getStatus(b) == CANCELLED       # stays: cancelled by hand
    consistent(service)


def test_deleting_a_parent_cancels_children(service):
    a = service.add('echo', 1)
    b = service.add('echo', after=a)
    service.delete(a)
    assert service.getStatus(b) == CANCELLED
    assert service.getError(b) == 'cancelled: parent job %s was deleted' % a
    with pytest.raises(InvalidStatusError, match='was deleted'):
        service.retry(b)
    consistent(service)


def test_retry_of_failed_parent_revives_cancelled_children(service):
    calls = []

    def flaky(input):
        calls.append(input)
        if len(calls) == 1:
            raise TaskError('first time fails')
        return input
    register('flaky', flaky)
    ids = service.chain([('flaky', 7), ('inc', None), ('inc', None)])
    service.process()
    assert [service.getStatus(i) for i in ids] == [ERROR, CANCELLED,
                                                  CANCELLED]
    with pytest.raises(InvalidStatusError, match='retry job %s' % ids[0]):
        service.retry(ids[1])
    service.retry(ids[0])
    assert [service.getStatus(i) for i in ids] == [QUEUED, DEFERRED,
                                                  DEFERRED]
    assert service.getError(ids[1]) is None
    consistent(service)
    service.process()
    assert [service.getResult(i) for i in ids] == [7, 8, 9]
    consistent(service)


def test_retry_keeps_children_cancelled_by_hand_or_by_another_parent(
        service):
    a = service.add('fail', 1)
    b = service.add('fail', 2)
    both = service.add('echo', after=(a, b))
    byHand = service.add('echo', after=a)
    service.cancel(byHand)
    service.process()
    assert service.getStatus(both) == CANCELLED
    service.retry(a)
    # b failed too: it stays cancelled, now naming b.
    assert service.getStatus(both) == CANCELLED
    assert service.jobs[both]._cancelledBy == b
    assert service.getStatus(byHand) == CANCELLED
    register('fail', lambda input: input)       # now they pass
    service.retry(b)
    assert service.getStatus(both) == DEFERRED
    service.process()
    assert service.getStatus(both) == COMPLETED
    consistent(service)


def test_retry_of_a_child_whose_parents_are_done(service):
    register('once', fail)
    a = service.add('echo', 'x')
    child = service.add('once', after=a)
    service.process()
    assert service.getStatus(child) == ERROR
    register('once', lambda input: currentJob().parentResults())
    service.retry(child)
    assert service.getStatus(child) == QUEUED
    service.process()
    assert service.getResult(child) == ['x']


def test_retry_of_cancelled_child_with_pending_parent_defers_it(service):
    a = service.add('echo', 1)
    b = service.add('echo', after=a)
    service.cancel(b)
    service.retry(b)
    assert service.getStatus(b) == DEFERRED
    service.process()
    assert service.getStatus(b) == COMPLETED
    consistent(service)


def test_clean_keeps_jobs_others_wait_for(service):
    a = service.add('echo', 1)
    b = service.add('echo', 2)
    child = service.add('echo', after=(a, b))
    service.processNext(jobid=a)
    assert workflows.awaited(service, service.jobs[a])
    service.clean()
    assert a in service.jobs          # child still waits for b, then runs
    service.process()
    assert not workflows.awaited(service, service.jobs[a])
    service.clean()
    assert not service.jobs and child not in service.jobs


def test_describe(service):
    ids, then = service.group([('echo', n) for n in range(3)],
                              then=('echo', None))
    info = workflows.describe(service, service.jobs[then])
    assert info == {'parents': ids, 'parents_total': 3, 'children': [],
                    'children_total': 0, 'waiting_for': 3,
                    'waiting_on': ids}
    info = workflows.describe(service, service.jobs[ids[0]])
    assert info['children'] == [then] and info['parents'] == []


def test_many_children_of_one_parent(service):
    a = service.add('echo', 'p')
    children = [service.add('parents', after=a) for n in range(100)]
    links = service.jobs[a]._links
    assert len(links) == 100 and list(links) == children
    service.process()
    assert all(service.getResult(c) == ['p'] for c in children)


def test_long_chain_cancels_without_recursion(service):
    ids = service.chain([('fail', 0)] + [('echo', None)] * 3000)
    service.processNext(jobid=ids[0])
    assert service.count(CANCELLED) == 3000
    assert service.getError(ids[-1]).endswith(
        "first cause: parent job %s ended in error: no good: 0" % ids[0])


# -- bad input ----------------------------------------------------------------

def test_after_an_unknown_job(service):
    with pytest.raises(InvalidInputError,
                       match='after: no job with id 99 '):
        service.add('echo', after=99)
    assert len(service.jobs) == 0


@pytest.mark.parametrize('after', ['1', 1.5, [None], True, {1: 2}])
def test_after_must_be_ids(service, after):
    service.add('echo')
    with pytest.raises(InvalidInputError, match='after must'):
        service.add('echo', after=after)
    assert len(service.jobs) == 1


def test_after_a_cron_job(service):
    cron = service.addCronJob('echo', delay=60)
    with pytest.raises(InvalidInputError, match='cron job'):
        service.add('echo', after=cron)


def test_after_with_start_later_or_delay(service):
    a = service.add('echo')
    for kw in ({'startLater': True}, {'delay': 5}, {'eta': 10}):
        with pytest.raises(InvalidInputError, match='can not be combined'):
            service.add('echo', after=a, **kw)
    assert len(service.jobs) == 1


def test_empty_group_and_chain(service):
    with pytest.raises(InvalidInputError, match='a group needs at least one '
                                                'step'):
        service.group([], then=('echo', None))
    with pytest.raises(InvalidInputError, match='a chain needs at least one'):
        service.chain([])
    assert len(service.jobs) == 0


@pytest.mark.parametrize('step', ['echo', ('echo',), ('echo', 1, 2), None,
                                  {'task': 'echo'}])
def test_step_that_is_not_a_pair(service, step):
    with pytest.raises(InvalidInputError,
                       match=r'step 2 of the chain is not a \(task, input\) '
                             r'pair'):
        service.chain([('echo', 1), step])
    assert len(service.jobs) == 0


def test_unknown_task_inside_a_chain_adds_nothing(service):
    with pytest.raises(UnknownTaskError,
                       match="step 3 of the chain: unknown task 'nope'"):
        service.chain([('echo', 1), ('echo', None), ('nope', None)])
    assert len(service.jobs) == 0
    with pytest.raises(UnknownTaskError, match='the then of the group'):
        service.group([('echo', 1)], then=('nope', None))
    assert len(service.jobs) == 0


def test_unpicklable_input_in_a_group_adds_nothing(service):
    with pytest.raises(InvalidInputError, match='step 2 of the group'):
        service.group([('echo', 1), ('echo', threading.Lock())])
    assert len(service.jobs) == 0


def test_steps_not_a_sequence(service):
    with pytest.raises(InvalidInputError, match='sequence of'):
        service.chain('echo')


def test_parent_results_of_a_deleted_parent(service):
    a = service.add('echo', 1)
    b = service.add('parents', after=a)
    service.processNext(jobid=a)
    service.delete(a)          # b is queued already: it runs, and fails
    service.process()
    assert service.getStatus(b) == ERROR
    assert 'was deleted' in service.getError(b)


# -- in a database: conflicts and their resolution ----------------------------

@pytest.fixture
def db(tmp_path):
    database = ZODB.DB(ZODB.FileStorage.FileStorage(
        str(tmp_path / 'Data.fs')))
    yield database
    database.close()


def _open(db):
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    return tm, conn, conn.root()['tasks']


def test_countdown_merges_unless_it_reaches_zero(db):
    conn = db.open()
    conn.root()['c'] = workflows.Countdown(3)
    transaction.commit()
    conn.close()
    t1 = transaction.TransactionManager()
    t2 = transaction.TransactionManager()
    c1, c2 = db.open(t1), db.open(t2)
    c1.root()['c'].change(-1)
    c2.root()['c'].change(-1)
    t1.commit()
    t2.commit()                # 3 - 1 - 1 = 1: merged
    t1.begin()
    assert c1.root()['c']() == 1
    c1.root()['c'].set(2)
    t1.commit()
    t1.begin()
    t2.begin()
    c1.root()['c'].change(-1)
    c2.root()['c'].change(-1)
    t1.commit()
    with pytest.raises(ConflictError):
        t2.commit()            # both saw 1 left: the second must run again
    t2.abort()
    c1.close()
    c2.close()


def test_concurrent_last_completions_release_once(db, service):
    """Two connections complete the last two parents of a job at the same
    time: one commit conflicts, and once retried releases the job."""
    conn = db.open()
    conn.root()['tasks'] = service
    ids, then = service.group([('echo', 1), ('echo', 2)], then=('echo', None))
    transaction.commit()
    conn.close()
    (t1, c1, s1), (t2, c2, s2) = _open(db), _open(db)
    s1.processNext(jobid=ids[0])
    s2.processNext(jobid=ids[1])
    t1.commit()
    with pytest.raises(ConflictError):
        t2.commit()
    t2.abort()
    t2.begin()
    s2.processNext(jobid=ids[1])
    assert s2.getStatus(then) == QUEUED
    t2.commit()
    t1.begin()
    assert s1.jobs[then].input == [1, 2]
    consistent(s1)
    c1.close()
    c2.close()


@pytest.mark.parametrize('existing', [1, workflows.INLINE + 5])
def test_child_added_while_parent_completes(db, service, existing):
    """Adding a child and completing its parent concurrently: the one that
    commits second conflicts; the child is never left waiting.  (Children
    on the parent job itself, and in a _Links beyond INLINE.)"""
    conn = db.open()
    conn.root()['tasks'] = service
    a = service.add('echo', 1)
    for n in range(existing):
        service.add('echo', 'child', after=a)
    transaction.commit()
    conn.close()
    for order in ('add first', 'complete first'):
        (t1, c1, s1), (t2, c2, s2) = _open(db), _open(db)
        if order == 'complete first':
            a = s1.add('echo', 2)
            for n in range(existing):
                s1.add('echo', 'child', after=a)
            t1.commit()
            t1.begin()
            t2.begin()
        child = s1.add('echo', after=a)
        s2.processNext(jobid=a)
        first, second = (t1, t2) if order == 'add first' else (t2, t1)
        first.commit()
        with pytest.raises(ConflictError):
            second.commit()
        second.abort()
        second.begin()
        if order == 'add first':
            s2.processNext(jobid=a)
        else:
            child = s1.add('echo', after=a)
        second.commit()
        t1.begin()
        assert s1.getStatus(child) == QUEUED, order
        consistent(s1)
        c1.close()
        c2.close()


def test_old_service_gets_the_new_status_index(db, service):
    conn = db.open()
    service._index.pop(DEFERRED)
    conn.root()['tasks'] = service
    transaction.commit()
    conn.close()
    db.pool.clear() if hasattr(db.pool, 'clear') else None
    tm, conn, s = _open(db)
    s._p_invalidate()
    assert s.count(DEFERRED) == 0
    a = s.add('echo', 1)
    s.add('echo', after=a)
    tm.commit()
    conn.close()
    tm, conn, s = _open(db)
    s._p_invalidate()
    assert s.count(DEFERRED) == 1
    consistent(s)
    conn.close()


def test_a_job_without_children_costs_no_workflow_call(service,
                                                      monkeypatch):
    calls = []
    monkeypatch.setattr(workflows, 'transitioned',
                        lambda *args: calls.append(args))
    monkeypatch.setattr(workflows, 'forgotten',
                        lambda *args: calls.append(args))
    a = service.add('echo', 1)
    b = service.add('fail', 2)
    service.process()
    service.retry(b)
    service.cancel(b)
    service.delete(a)
    assert calls == []
    assert service.jobs[b]._links is None


def test_a_deferred_job_holds_its_unique_key(service):
    a = service.add('echo', 1)
    b = service.add('echo', 2, after=a, unique_key='k')
    assert service.add('echo', 3, unique_key='k') == b


def test_releasing_touches_only_the_children(service, monkeypatch):
    """Completing a parent reads its own children and their countdowns,
    not the other jobs of the graph."""
    ids, then = service.group([('echo', n) for n in range(50)],
                              then=('sum', None))
    other = service.add('echo', after=ids[0])
    seen = []
    original = workflows._parentDone
    monkeypatch.setattr(workflows, '_parentDone',
                        lambda s, child, pid, now: (
                            seen.append(child.id),
                            original(s, child, pid, now)))
    service.processNext(jobid=ids[1])
    assert seen == [then]
    service.processNext(jobid=ids[0])
    assert seen == [then, then, other]


def test_parent_deleted_while_a_child_is_added(db, service):
    conn = db.open()
    conn.root()['tasks'] = service
    a = service.add('echo', 1)
    transaction.commit()
    conn.close()
    (t1, c1, s1), (t2, c2, s2) = _open(db), _open(db)
    s1.add('echo', after=a)
    s2.delete(a)
    t2.commit()
    with pytest.raises(ConflictError):
        t1.commit()
    t1.abort()
    t1.begin()
    with pytest.raises(InvalidInputError, match='no job with id'):
        s1.add('echo', after=a)
    c1.close()
    c2.close()


@pytest.mark.parametrize('order', ['forward', 'reverse', 'shuffled'])
def test_sharded_countdown_releases_once(service, order):
    import random
    n = 3 * workflows.SHARD_FROM
    ids, then = service.group([('echo', i) for i in range(n)],
                              then=('echo', None))
    countdown = service.jobs[then]._countdown
    assert isinstance(countdown, workflows.ShardedCountdown)
    assert countdown() == n and countdown.left() == len(countdown.shards)
    todo = list(ids)
    if order == 'reverse':
        todo.reverse()
    elif order == 'shuffled':
        random.Random(4).shuffle(todo)
    for jobid in todo[:-1]:
        service.processNext(jobid=jobid)
        assert service.getStatus(then) == DEFERRED
    assert workflows.describe(service, service.jobs[then])[
        'waiting_for'] == 1
    consistent(service)
    service.processNext(jobid=todo[-1])
    assert service.getStatus(then) == QUEUED
    assert service.jobs[then].input == list(range(n))


def test_sharded_last_completions_in_two_shards_release_once(db, service):
    """The last parents of two shards complete at the same time: both
    shards reach zero, and the two decrements of ``left`` (2 -> 0) can not
    be merged: one commit conflicts, and once retried releases the job."""
    conn = db.open()
    conn.root()['tasks'] = service
    ids, then = service.group([('echo', i) for i in range(100)],
                              then=('echo', None))
    countdown = service.jobs[then]._countdown
    key = countdown.key
    first, second = ids[0], next(i for i in ids if key(i) != key(ids[0]))
    for jobid in ids:
        if jobid not in (first, second):
            service.processNext(jobid=jobid)
    assert countdown.left() == 2
    transaction.commit()
    conn.close()
    (t1, c1, s1), (t2, c2, s2) = _open(db), _open(db)
    s1.processNext(jobid=first)
    s2.processNext(jobid=second)
    assert s1.getStatus(then) == s2.getStatus(then) == DEFERRED
    t1.commit()
    with pytest.raises(ConflictError):
        t2.commit()
    t2.abort()
    t2.begin()
    s2.processNext(jobid=second)
    assert s2.getStatus(then) == QUEUED
    t2.commit()
    t1.begin()
    assert s1.jobs[then].input == list(range(100))
    consistent(s1)
    c1.close()
    c2.close()

"""Routing and flow control in the service (routing.py): priorities,
queues, unique keys, concurrency, rate limits, pauses, bulk actions, bad
input.  The same with real worker processes: test_routing_workers.py."""
import pytest
import transaction
import ZODB
import ZODB.FileStorage
import zope.component
from ZODB.POSException import ConflictError
from zope.configuration.config import ConfigurationError

from remotetask import routing
from remotetask.interfaces import (
    CANCELLED, CRONJOB, ERROR, PROCESSING, QUEUED, InvalidInputError,
    InvalidStatusError)
from remotetask.processor import Processor
from remotetask.service import TaskService
from remotetask.task import SimpleTask
from remotetask.testing import checkConsistency


def register(name, func=lambda x: x, **policy):
    task = SimpleTask(func, **policy)
    zope.component.provideUtility(task, name=name)
    return task


@pytest.fixture
def service():
    register('echo')
    register('other')
    return TaskService()


@pytest.fixture
def db(tmp_path):
    database = ZODB.DB(ZODB.FileStorage.FileStorage(str(tmp_path / 'D.fs')))
    yield database
    database.close()


def claimed(service, now=10, **kw):
    return [job.id for job in service.claim(now=now, **kw)]


def finish(service, ids, now=11):
    for jobid in ids:
        service.run(service.jobs[jobid], now=now)


# -- priorities ------------------------------------------------------------------

def test_higher_priority_first_then_due_order(service):
    low = [service.add('echo', i, now=i) for i in range(3)]
    high = [service.add('echo', i, priority=10, now=5 + i) for i in range(2)]
    negative = service.add('echo', 'n', priority=-5, now=0)
    assert claimed(service, limit=10) == high + low + [negative]
    assert checkConsistency(service) == []


def test_spread_claims_take_higher_priorities_first(service):
    low = {service.add('echo', i, now=0) for i in range(40)}
    high = {service.add('echo', i, priority=3, now=1) for i in range(20)}
    first = set(claimed(service, limit=20, spread=True))
    assert first == high
    assert set(claimed(service, limit=100, spread=True)) == low


def test_a_delayed_high_priority_job_does_not_hold_back_due_ones(service):
    later = service.add('echo', 1, priority=9, delay=100, now=0)
    due = service.add('echo', 2, now=0)
    assert claimed(service) == [due]
    assert claimed(service, now=200) == [later]


def test_retries_and_hand_backs_stay_in_their_lane(service):
    jobid = service.add('echo', 1, queue='q', priority=4, now=0)
    [job] = service.claim(now=1, lease=5)
    service.handBack(job, now=2)
    assert list(routing.lane(service, job)) == [(2, jobid)]
    assert len(service._queue) == 0
    [job] = service.claim(now=3)
    service._fail(job, 'boom', None, now=4)
    service.retry(jobid, now=5)
    assert job.status == QUEUED and (job.queue, job.priority) == ('q', 4)
    assert list(service.queue()) == [(5, jobid)]
    assert checkConsistency(service) == []


def test_cron_jobs_have_a_queue_and_priority(service):
    jobid = service.addCronJob('echo', interval=10, queue='cron', priority=2,
                               now=0)
    job = service.jobs[jobid]
    assert (job.queue, job.priority, job.status) == ('cron', 2, CRONJOB)
    assert claimed(service, now=5) == []
    assert claimed(service, now=10, queues=['default']) == []
    assert claimed(service, now=10, queues=['cron']) == [jobid]


# -- queues ------------------------------------------------------------------------

def test_queues_restrict_and_order_claims(service):
    a = [service.add('echo', i, queue='a', now=i) for i in range(3)]
    b = [service.add('echo', i, queue='b', priority=50, now=i)
         for i in range(3)]
    d = service.add('echo', 'd', now=0)
    assert claimed(service, queues=['nosuchqueue']) == []
    # The first queue named is drained first, whatever the priorities.
    assert claimed(service, limit=4, queues=['a', 'b']) == a + b[:1]
    assert claimed(service, limit=9, queues=('default',)) == [d]
    assert claimed(service, limit=9) == b[1:]
    assert checkConsistency(service) == []


def test_same_priority_across_queues_in_due_order(service):
    x = service.add('echo', 1, queue='x', now=3)
    y = service.add('echo', 2, queue='y', now=1)
    z = service.add('echo', 3, now=2)
    assert [claimed(service)[0] for i in range(3)] == [y, z, x]


def test_queues_summary(service):
    for i in range(3):
        service.add('echo', i, queue='a', priority=i, now=0)
    service.add('echo', 9, now=5)
    service.add('echo', 8, queue='b', delay=100, now=0)
    [job] = service.claim(now=10, queues=['a'])
    service.pause(queue='b')
    info = {q['queue']: q for q in service.queues(now=10)}
    assert sorted(info) == ['a', 'b', 'default']
    assert info['a']['waiting'] == 2 and info['a']['processing'] == 1
    assert info['a']['priorities'] == [1, 0]
    assert info['a']['oldest_age'] == 10 and not info['a']['paused']
    assert info['default'] == dict(
        queue='default', waiting=1, processing=0, priorities=[0],
        oldest_due=5, oldest_age=5, paused=False)
    assert info['b']['paused'] and info['b']['oldest_age'] is None
    service.run(job, now=11)
    assert {q['queue']: q['processing'] for q in service.queues()} == {
        'a': 0, 'b': 0, 'default': 0}


# -- unique keys -----------------------------------------------------------------

def test_unique_key_adds_one_job_while_it_is_alive(service):
    first = service.add('echo', 1, unique_key='k', now=0)
    assert service.add('echo', 2, unique_key='k', now=1) == first
    assert service.add('echo', 3, unique_key='other', now=1) != first
    assert service.count() == 2
    [job] = service.claim(now=2, limit=1)
    assert job.id == first
    assert service.add('echo', 4, unique_key='k', now=3) == first
    service.run(job, now=4)
    second = service.add('echo', 5, unique_key='k', now=5)
    assert second != first and service.jobs[second].input == 5
    service.cancel(second)
    third = service.add('echo', 6, unique_key='k', startLater=True)
    assert service.add('echo', 7, unique_key='k') == third
    service.delete(third)
    assert 'k' not in service._routing.unique
    assert service.add('echo', 8, unique_key='k') not in (first, second,
                                                          third)


def test_two_connections_adding_one_key_get_one_job(db):
    register('echo')
    with db.transaction() as conn:
        conn.root()['tasks'] = TaskService()
    tm1, tm2 = transaction.TransactionManager(), transaction.TransactionManager()
    c1, c2 = db.open(tm1), db.open(tm2)
    s1, s2 = c1.root()['tasks'], c2.root()['tasks']
    id1 = s1.add('echo', 1, unique_key='report-7')
    id2 = s2.add('echo', 2, unique_key='report-7')
    assert id1 != id2
    tm1.commit()
    with pytest.raises(ConflictError):
        tm2.commit()
    tm2.abort()
    assert s2.add('echo', 2, unique_key='report-7') == id1
    tm2.commit()
    assert s2.count() == 1
    c1.close()
    c2.close()


# -- concurrency -------------------------------------------------------------------

def test_concurrency_caps_processing_jobs(service):
    register('one', concurrency=2)
    ids = [service.add('one', i, now=0) for i in range(5)]
    plain = service.add('echo', 'x', now=1)
    # Held-back jobs are looked past: the claim goes on to other tasks.
    first = claimed(service, limit=10)
    assert first == ids[:2] + [plain]
    assert claimed(service, limit=10) == []
    finish(service, first[:1])
    assert claimed(service, limit=10) == ids[2:3]
    # A job that leaves processing in any way frees its slot.
    [job] = [service.jobs[ids[1]]]
    service.handBack(job, now=12)
    assert claimed(service, limit=10, now=13) == [ids[3]]
    assert checkConsistency(service) == []


def test_concurrency_is_decided_in_the_claims_transaction(db):
    register('one', concurrency=1)
    register('echo')
    with db.transaction() as conn:
        service = conn.root()['tasks'] = TaskService()
        service.add('one', 1, queue='a')
        service.add('one', 2, queue='b')
        # The task's slot is made by its first claim (here, so that the
        # two claims below meet on the slot alone).
        service.add('one', 0, queue='z')
        [job] = service.claim(queues=['z'])
        service.run(job)
    tm1, tm2 = transaction.TransactionManager(), transaction.TransactionManager()
    c1, c2 = db.open(tm1), db.open(tm2)
    # Two claims of different jobs of the task: both take its one slot.
    [j1] = c1.root()['tasks'].claim(limit=5, queues=['a'])
    [j2] = c2.root()['tasks'].claim(limit=5, queues=['b'])
    assert (j1.input, j2.input) == (1, 2)
    tm1.commit()
    with pytest.raises(ConflictError):
        tm2.commit()
    tm2.abort()
    assert c2.root()['tasks'].claim(limit=5) == []
    c1.close()
    c2.close()


def test_a_slot_whose_job_ended_elsewhere_is_free(service):
    register('one', concurrency=1)
    jobid = service.add('one', 1, now=0)
    [job] = service.claim(now=1)
    job._slot = None        # as if an older version had claimed it
    service.run(job, now=2)
    service.add('one', 2, now=3)
    assert len(claimed(service, now=4)) == 1


# -- rate limits ---------------------------------------------------------------------

def test_rate_limit_counts_starts_per_period(service):
    register('slow', rate_limit='2/s')
    ids = [service.add('slow', i, now=0) for i in range(5)]
    assert claimed(service, now=10.0, limit=5) == ids[:2]
    assert claimed(service, now=10.5, limit=5) == []
    assert claimed(service, now=11.0, limit=5) == ids[2:4]
    assert routing.nextStart(service, 'slow', 11.2) == 12.0
    assert claimed(service, now=12.0, limit=5) == ids[4:]


@pytest.mark.parametrize('rate, parsed', [
    ('5/s', (5, 1.0)), ('10/m', (10, 60.0)), (' 3 / h ', (3, 3600.0))])
def test_rate_limits_parse(rate, parsed):
    assert routing.parseRate(rate) == parsed


# -- pauses ------------------------------------------------------------------------------

def test_pause_and_resume(service):
    a = service.add('echo', 1, queue='a', now=0)
    b = service.add('other', 2, queue='b', now=0)
    d = service.add('echo', 3, now=0)
    assert service.pause(queue='a', now=5) is True
    assert service.pause(queue='a') is False
    assert service.paused() == [{'queue': 'a', 'task': None, 'since': 5}]
    assert service.pausedCount() == 1
    service.pause(task='other')
    assert service.pausedCount() == 2
    assert claimed(service, limit=5) == [d]
    assert not service.hasJobsWaiting(now=10) is False
    assert service.resume(task='other') == 1
    assert claimed(service, limit=5) == [b]
    service.pause()
    assert service.hasJobsWaiting(now=10) is False
    assert service.pausedCount() == 1
    assert claimed(service, limit=5) == []
    assert service.resume() == 2 and service.paused() == []
    assert claimed(service, limit=5) == [a]


def test_pause_a_task_in_one_queue(service):
    a = service.add('echo', 1, queue='a', now=0)
    b = service.add('echo', 2, queue='b', now=0)
    service.pause(queue='a', task='echo')
    assert service.pausedCount() == 1
    assert claimed(service, limit=5) == [b]
    service.resume(queue='a')
    assert claimed(service, limit=5) == [a]


# -- bulk actions ----------------------------------------------------------------------

def test_bulk_actions(service):
    failed = []
    for queue, task in (('a', 'echo'), ('a', 'other'), ('b', 'echo')):
        jobid = service.add(task, 1, queue=queue, now=0)
        failed.append(jobid)
    for job in service.claim(now=1, limit=3):
        service._fail(job, 'boom', None, now=2)
    assert service.retryAll(queue='a', dry_run=True) == 2
    assert service.count(ERROR) == 3
    assert service.retryAll(queue='a', task='echo', now=3) == 1
    assert service.jobs[failed[0]].status == QUEUED
    assert service.retryAll(now=3) == 2
    assert service.count(ERROR) == 0
    later = service.add('echo', 2, queue='a', delay=50, now=3)
    held = service.add('echo', 3, queue='a', startLater=True)
    cron = service.addCronJob('echo', interval=10, queue='a')
    assert service.purge(queue='a', dry_run=True) == 4
    assert service.purge(queue='a', task='other') == 1
    assert service.purge(queue='a') == 3
    assert service.jobs[later].status == CANCELLED
    assert service.jobs[held].status == CANCELLED
    assert service.jobs[cron].status == CRONJOB
    assert service.deleteJobs(status=CANCELLED, queue='a', dry_run=True) == 4
    assert service.deleteJobs(status=[CANCELLED], task='other') == 1
    assert service.deleteJobs(queue='a') == 4     # 3 cancelled and the cron
    assert sorted(service.jobs.keys()) == [failed[2]]
    assert checkConsistency(service) == []


def test_bulk_actions_refuse_bad_filters(service):
    with pytest.raises(InvalidStatusError, match='processing'):
        service.deleteJobs(status=PROCESSING)
    with pytest.raises(InvalidStatusError, match="'nope'"):
        service.deleteJobs(status='nope')
    with pytest.raises(InvalidInputError, match='queue must be a string'):
        service.purge(queue=3)
    with pytest.raises(InvalidInputError, match='task must be'):
        service.retryAll(task=['echo'])


# -- bad input -------------------------------------------------------------------------

@pytest.mark.parametrize('kw, message', [
    (dict(queue=1), 'queue must be a string'),
    (dict(queue=''), 'non-blank'),
    (dict(queue=None), 'queue must be a string'),
    (dict(priority='1'), 'priority must be an integer'),
    (dict(priority=1.5), 'priority must be an integer'),
    (dict(priority=True), 'priority must be an integer'),
    (dict(priority=10 ** 6), 'between -1000 and 1000'),
    (dict(unique_key=5), 'unique_key must be'),
    (dict(unique_key=''), 'unique_key must be'),
])
def test_bad_routing_input_is_refused_and_nothing_stored(service, kw,
                                                         message):
    with pytest.raises(InvalidInputError, match=message):
        service.add('echo', 1, **kw)
    with pytest.raises(InvalidInputError, match=message.split()[0]):
        if 'unique_key' not in kw:
            service.addCronJob('echo', interval=5, **kw)
        else:
            raise InvalidInputError(message)
    assert service.count() == 0 and list(service.queue()) == []


@pytest.mark.parametrize('rate', ['5', '5/d', 'five/s', '0/s', '5/s/m', 5,
                                  '100000/s'])
def test_malformed_rate_limits(rate):
    with pytest.raises(InvalidInputError, match='rate_limit'):
        SimpleTask(len, rate_limit=rate)


@pytest.mark.parametrize('value', [0, -1, 1.5, '2', True])
def test_bad_concurrency(value):
    with pytest.raises(InvalidInputError, match='concurrency must be an '
                       'integer >= 1'):
        SimpleTask(len, concurrency=value)


def test_zcml_attributes(tmp_path):
    from remotetask import zcml
    zcml.loadString('''
        <configure xmlns="http://namespaces.zope.org/remotetask">
          <task name="capped" function="builtins.len" concurrency="3"
                rate_limit="10/m" />
        </configure>''')
    from remotetask.interfaces import ITask
    task = zope.component.getUtility(ITask, 'capped')
    assert (task.concurrency, task.rate_limit) == (3, '10/m')
    for attrs, message in (('concurrency="0"', 'concurrency must be'),
                           ('rate_limit="ten/s"', 'rate_limit must be')):
        with pytest.raises(ConfigurationError, match=message):
            zcml.loadString('''
                <configure xmlns="http://namespaces.zope.org/remotetask">
                  <task name="bad" function="builtins.len" %s />
                </configure>''' % attrs)


def test_processor_queues_are_checked(db):
    with pytest.raises(ValueError, match='queues'):
        Processor(db, queues=[])
    with pytest.raises(ValueError, match='queues must be a string'):
        Processor(db, queues=['a', 7])
    assert Processor(db, queues='a').queues == ('a',)
    assert Processor(db, queues=['b', 'a', 'b']).queues == ('b', 'a')


# -- older services ------------------------------------------------------------------

def test_a_service_made_before_routing_gets_its_state_when_used(service):
    del service._routing        # what an older version stored
    assert service._routing is None
    plain = service.add('echo', 1, now=0)
    assert service._routing is None and service.queues(now=1)[0][
        'waiting'] == 1
    urgent = service.add('echo', 2, priority=1, now=0)
    assert service._routing is not None
    assert claimed(service, limit=2) == [urgent, plain]
    assert checkConsistency(service) == []


def test_jobs_tell_their_routing(service):
    jobid = service.add('echo', 1, queue='q', priority=1, unique_key='u')
    info = service.jobs[jobid].info()
    assert (info['queue'], info['priority'], info['unique_key']) == (
        'q', 1, 'u')
    assert service.jobs[jobid].status == QUEUED


def test_start_processing_with_queues(db):
    import time
    register('echo')
    with db.transaction() as conn:
        service = conn.root()['tasks'] = TaskService()
        a = service.add('echo', 1, queue='a')
        b = service.add('echo', 2, queue='b')
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    service = conn.root()['tasks']
    processor = service.startProcessing(queues=['a'], poll_interval=0.1)
    try:
        assert processor.queues == ('a',)
        deadline = time.monotonic() + 60
        while True:
            tm.begin()
            if service.jobs[a].status == 'completed':
                break
            assert time.monotonic() < deadline, 'job of queue a not run'
            time.sleep(0.05)
        time.sleep(0.5)
        tm.begin()
        assert service.jobs[b].status == QUEUED
    finally:
        assert service.stopProcessing(10)
        tm.abort()
        conn.close()


def test_first_eta_over_every_lane_paused_or_not(service):
    register('echo')
    assert routing.firstEta(service) is None
    service.add('echo', now=10, delay=50)                 # due at 60
    service.add('echo', queue='slow', now=10, delay=20)   # due at 30
    service.add('echo', priority=5, now=10, delay=40)     # due at 50
    assert routing.firstEta(service) == 30
    service.pause(queue='slow', now=10)
    assert routing.firstEta(service) == 30    # paused: still waiting
    ids = claimed(service, now=100, limit=10)
    assert len(ids) == 2
    assert routing.firstEta(service) == 30

"""The core: service, jobs, cron, structures, bad input, events, ZCML."""
import logging
import os
import random
import threading

import pytest
import transaction
import ZODB
import ZODB.FileStorage
import zope.component
import zope.event
from ZODB.POSException import ConflictError
from zope.interface.verify import verifyClass, verifyObject

import remotetask
from remotetask import events, interfaces, structures
from remotetask.interfaces import (
    COMPLETED, CRONJOB, DELAYED, ERROR, PROCESSING, QUEUED, InvalidInputError,
    InvalidStatusError, JobNotFoundError, Retry, TaskError, UnknownTaskError)
from remotetask.job import CronJob, Job, TaskContext
from remotetask.service import TaskService
from remotetask.task import SimpleTask, TaskBase, retryDelay
from remotetask.testing import checkConsistency


def register(name, func, **policy):
    task = SimpleTask(func, **policy)
    zope.component.provideUtility(task, name=name)
    return task


@pytest.fixture
def service():
    register('echo', lambda input: input)
    return TaskService()


@pytest.fixture
def filedb(tmp_path):
    path = str(tmp_path / 'Data.fs')
    databases = []

    def open_():
        db = ZODB.DB(ZODB.FileStorage.FileStorage(path))
        databases.append(db)
        return db
    yield open_
    for db in databases:
        db.close()


# -- contracts ----------------------------------------------------------------

def test_every_class_provides_its_interface(service):
    assert remotetask.TaskService is TaskService
    verifyObject(interfaces.ITaskService, service)
    verifyObject(interfaces.IJob, Job(1, 'echo'))
    verifyObject(interfaces.ICronJob, CronJob(2, 'echo', minute=(1,)))
    verifyObject(interfaces.ITask, SimpleTask(len))
    verifyClass(interfaces.ITask, TaskBase)
    verifyObject(interfaces.ITaskContext,
                 TaskContext(service, Job(3, 'echo')))
    for cls, iface in ((events.JobStarted, interfaces.IJobStarted),
                       (events.JobCompleted, interfaces.IJobCompleted),
                       (events.JobFailed, interfaces.IJobFailed),
                       (events.JobRetried, interfaces.IJobRetried),
                       (events.JobCancelled, interfaces.IJobCancelled)):
        verifyObject(iface, cls(Job(4, 'echo'), service))


def test_statuses_are_declared_once():
    assert interfaces.STATUSES == (
        'start later', 'deferred', 'queued', 'delayed', 'cronjob', 'processing',
        'completed', 'error', 'cancelled')
    assert set(interfaces.FINAL_STATUSES) == {'completed', 'error',
                                              'cancelled'}
    assert remotetask.QUEUED is interfaces.QUEUED


def test_one_exception_tree():
    for exc in (UnknownTaskError, JobNotFoundError, InvalidInputError,
                InvalidStatusError, TaskError, Retry,
                interfaces.InvalidScheduleError, interfaces.LeaseLost,
                interfaces.StorageUnavailable,
                interfaces.TimeLimitExceeded):
        assert issubclass(exc, interfaces.RemoteTaskError)
    assert issubclass(JobNotFoundError, KeyError)
    assert issubclass(UnknownTaskError, ValueError)
    import transaction.interfaces as ti
    assert issubclass(interfaces.StorageUnavailable, ti.TransientError)


# -- ids ----------------------------------------------------------------------

def test_fresh_service_numbers_jobs_from_one(service):
    assert [service.add('echo', i) for i in range(3)] == [1, 2, 3]


def test_detached_service_takes_growing_blocks_of_lane_0(service):
    ids = service._ids
    got = [ids.allocate() for _ in range(2999)]
    # Lane 0's stripes: 1-999, then 16000-16999 (the 15 stripes between
    # are the other lanes'), then 32000...
    assert got == (list(range(1, 1000)) + list(range(16000, 17000))
                   + list(range(32000, 33000)))
    assert {structures.partitionOf(i) for i in got} == {0}
    assert ids._lanes[0].value > 32000 and ids._lanes[1].value == 1000


def _inThread(func):
    found = []
    thread = threading.Thread(target=lambda: found.append(func()))
    thread.start()
    thread.join()
    return found[0]


def test_stored_service_reserves_blocks_in_a_transaction_of_its_own(filedb):
    db = filedb()
    conn = db.open()
    conn.root()['tasks'] = service = TaskService()
    register('echo', lambda input: input)
    assert service.add('echo') == 1         # not committed yet: here
    transaction.commit()
    assert service._ids._lanes[0].value == 2
    second = service.add('echo')            # a ticket (lane 0), id 2...
    transaction.abort()                     # ...which an abort keeps
    assert second == 2 and service._ids._lanes[0].value == 3
    assert service._ids._tickets.value == 1
    assert service.add('echo') == 3         # a block of 2: ids 3-4
    assert service.add('echo') == 4
    transaction.abort()
    assert service._ids._lanes[0].value == 5
    conn.close()

    def add():
        with transaction.manager:
            return db.open().root()['tasks'].add('echo')
    # Another thread (or process) takes the next ticket: lane 1.
    assert _inThread(add) == 1000
    # A thread that ended hands its lane and block on to the next one.
    assert _inThread(add) == 1001
    assert _inThread(add) == 1002


@pytest.mark.skipif(not hasattr(os, 'fork'), reason='no os.fork')
def test_a_forked_child_starts_without_its_parents_blocks(filedb):
    db = filedb()
    conn = db.open()
    conn.root()['tasks'] = service = TaskService()
    register('echo', lambda input: input)
    transaction.commit()
    service.add('echo')                     # this thread holds a block now
    transaction.commit()
    state = structures._thread()
    assert state.last is not None and state.blocks
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:        # the child: report, and leave at once
        try:
            state = structures._thread()
            os.write(write, b'fresh' if state.last is None
                     and not state.blocks else b'inherited')
        finally:
            os._exit(0)
    os.close(write)
    try:
        assert os.read(read, 100) == b'fresh'
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    assert structures._thread().last is not None    # the parent's: kept
    conn.close()


def test_an_allocator_of_the_old_layout_goes_on_after_its_ids(filedb):
    db = filedb()
    conn = db.open()
    allocator = structures.IdAllocator()
    del allocator._lanes, allocator._tickets     # as an older version made
    allocator._blocks = structures._Counter()
    allocator._blocks.value = 2500
    conn.root()['ids'] = allocator
    transaction.commit()
    assert _inThread(lambda: db.open().root()['ids'].allocate()) == 2501
    assert _inThread(lambda: db.open().root()['ids'].allocate()) == 2502
    transaction.begin()
    assert [c.value for c in allocator._lanes][:4] == [16000, 17000, 2504,
                                                       3000]
    conn.close()


# -- status bookkeeping ---------------------------------------------------------

def test_random_operations_keep_the_bookkeeping_consistent(service):
    register('boom', lambda input: 1 / 0)
    register('maybe', lambda input: input if input % 3 else 1 / 0,
             retry_on=(ZeroDivisionError,), max_retries=1,
             retry_backoff=5, retry_jitter=False)
    rng = random.Random(42)
    now = 0.0
    seen = set()        # statuses some job was in at the end of a step
    logging.getLogger('remotetask').disabled = True
    try:
        for step in range(600):
            now += rng.choice((0, 1, 3))
            op = rng.random()
            ids = list(service.jobs.keys())
            if op < 0.35:
                service.add(rng.choice(('echo', 'boom', 'maybe')), step,
                            delay=rng.choice((None, 0, 2, 10)),
                            startLater=rng.random() < 0.1, now=now)
            elif op < 0.4:
                # Repeating (interval) and one-off (lovely's delay) in turn.
                service.addCronJob('echo', step, now=now,
                                   **{'interval' if step % 2 else 'delay': 7})
            elif op < 0.6:
                service.processNext(now=now)
            elif op < 0.7 and ids:
                job = service.jobs[rng.choice(ids)]
                # (Cancelling a processing job only asks it to stop: its
                # run then ends it cancelled; tested on its own.)
                cancel = () if job.status == 'processing' else (
                    lambda jobid: service.cancel(jobid, now=now),)
                for method in cancel + (service.startJob,
                                        service.retry, service.delete):
                    try:
                        if method(job.id) is not False:     # startJob
                            break
                    except InvalidStatusError:
                        pass
            elif op < 0.8:
                for job in service.claim(now=now, limit=2, lease=5):
                    if rng.random() < 0.5:
                        service.run(job, now=now)
            elif op < 0.9:
                service.reap(now=now)
            else:
                service.clean(before=now - 5)
            problems = checkConsistency(service)
            assert not problems, (step, problems)
            seen.update(s for s, n in service.counts().items() if n)
    finally:
        logging.getLogger('remotetask').disabled = False
    counts = service.counts()
    assert sum(counts.values()) == len(service.jobs)
    assert {COMPLETED, ERROR, "cancelled"} <= seen


def test_counts_and_indexes(service):
    a = service.add('echo', 1)
    b = service.add('echo', 2, delay=100)
    service.add('echo', 3, startLater=True)
    assert service.counts()[QUEUED] == 1
    assert service.count(DELAYED) == 1
    assert service.count() == 3
    service.process()
    assert list(service.jobIds(COMPLETED)) == [a]
    assert list(service.jobIds(DELAYED)) == [b]
    with pytest.raises(ValueError):
        service.count('finished')
    with pytest.raises(ValueError):
        service.jobIds('finished')


def test_job_ids_by_status_and_task(service):
    register('other', len)
    a = service.add('echo', 1)
    b = service.add('other', 'x')
    c = service.add('echo', 3)
    service.processNext(jobid=c)
    assert list(service.jobIds()) == [a, b, c]
    assert list(service.jobIds(task='echo')) == [a, c]
    assert list(service.jobIds(QUEUED, 'echo')) == [a]
    assert list(service.jobIds(COMPLETED, 'other')) == []
    assert list(service.jobIds(task='unknown')) == []
    assert list(service.jobIds(task='echo').keys(min=c)) == [c]
    service.delete(a)
    assert list(service.jobIds(task='echo')) == [c]


# -- bad input --------------------------------------------------------------------

def test_unknown_task_stores_nothing(service):
    with pytest.raises(UnknownTaskError, match="unknown task 'nope'"):
        service.add('nope')
    with pytest.raises(UnknownTaskError):
        service.addCronJob('nope', minute=(1,))
    assert service.count() == 0 and len(service.jobs) == 0
    assert service.add('echo') == 1     # no id was used up


def test_unpicklable_input_and_meta_are_refused(service):
    with pytest.raises(InvalidInputError, match='input can not be stored'):
        service.add('echo', lambda: 1)
    with pytest.raises(InvalidInputError, match='meta data'):
        service.add('echo', 1, meta={'lock': threading.Lock()})
    assert len(service.jobs) == 0
    assert not checkConsistency(service)


def test_persistent_objects_in_the_input_are_references(service, filedb):
    db = filedb()
    conn = db.open()
    conn.root()['tasks'] = service
    conn.root()['doc'] = doc = persistent_thing()
    jobid = service.add('echo', {'doc': doc})
    transaction.commit()
    service.process()
    transaction.commit()
    assert service.getResult(jobid)['doc'] is conn.root()['doc']
    conn.close()


def persistent_thing():
    from persistent.mapping import PersistentMapping
    return PersistentMapping(title='a document')


@pytest.mark.parametrize('method', ['getStatus', 'getResult', 'getError',
                                    'cancel', 'startJob', 'reschedule',
                                    'retry', 'delete'])
def test_unknown_job_id_names_it(service, method):
    with pytest.raises(KeyError, match='no job with id 77'):
        getattr(service, method)(77)
    with pytest.raises(JobNotFoundError):
        service.processNext(jobid=77)


def test_statuses_that_do_not_allow_an_operation(service):
    jobid = service.add('echo', 1)
    assert service.startJob(jobid) is False     # lovely: only start later
    assert service.getStatus(jobid) == QUEUED
    with pytest.raises(InvalidStatusError, match='not a cron job'):
        service.reschedule(jobid)
    with pytest.raises(InvalidStatusError, match='retry'):
        service.retry(jobid)
    job = service.claimNextJob()
    with pytest.raises(InvalidStatusError, match='processing'):
        service.delete(jobid)
    service.run(job)
    with pytest.raises(InvalidStatusError):
        service.run(job)
    with pytest.raises(InvalidStatusError, match='only final'):
        service.clean(status=('processing',))
    with pytest.raises(ValueError, match='delay or eta'):
        service.add('echo', delay=1, eta=5)
    assert not checkConsistency(service)


# -- outcomes ----------------------------------------------------------------------

def test_task_error_has_message_and_no_traceback(service):
    def fail(input):
        raise TaskError('bad input %s' % input)
    register('fail', fail)
    jobid = service.add('fail', 7)
    service.process()
    job = service.jobs[jobid]
    assert (job.status, job.error, job.traceback) == (ERROR, 'bad input 7',
                                                      None)


def test_unexpected_exception_keeps_and_logs_traceback(service, caplog):
    register('boom', lambda input: {}['missing'])
    jobid = service.add('boom')
    with caplog.at_level(logging.ERROR, logger='remotetask'):
        service.process()
    job = service.jobs[jobid]
    assert job.status == ERROR
    assert job.error == "KeyError: 'missing'"
    assert 'Traceback' in job.traceback and "{}['missing']" in job.traceback
    assert 'job %d' % jobid in caplog.text and 'KeyError' in caplog.text


def test_task_unregistered_after_add(service):
    register('gone', len)
    jobid = service.add('gone', 'abc')
    zope.component.getGlobalSiteManager().unregisterUtility(
        provided=interfaces.ITask, name='gone')
    service.process()
    assert service.getStatus(jobid) == ERROR
    assert service.getError(jobid) == "unknown task 'gone'"


def test_unpicklable_result_fails_the_job(service):
    register('lock', lambda input: threading.Lock())
    jobid = service.add('lock')
    service.process()
    assert service.getStatus(jobid) == ERROR
    assert 'result can not be stored' in service.getError(jobid)


def test_retry_exception_with_delay_and_give_up(service):
    def again(input):
        raise Retry('not ready', delay=30)
    register('again', again, max_retries=2)
    jobid = service.add('again', now=0)
    job = service.jobs[jobid]
    service.process(now=0)
    assert (job.status, job.eta, job.retries) == (DELAYED, 30.0, 1)
    service.process(now=30)
    service.process(now=60)
    assert job.status == ERROR
    assert job.error == 'not ready (gave up after 2 retries)'
    assert [a['outcome'] for a in job.attempts] == ['retry', 'retry', ERROR]


def test_retry_at_once_is_bounded(service):
    def again(input):
        raise Retry(delay=0)
    register('again', again, max_retries=4)
    jobid = service.add('again', now=0)
    service.process(now=0)      # must terminate
    assert service.getStatus(jobid) == ERROR
    assert len(service.jobs[jobid].attempts) == 5


def test_backoff_doubles_is_capped_and_jittered():
    task = SimpleTask(len, retry_backoff=2, retry_backoff_max=10,
                      retry_jitter=False)
    assert [retryDelay(task, n) for n in (1, 2, 3, 4)] == [2, 4, 8, 10]
    task.retry_jitter = True
    rng = random.Random(1)
    delays = [retryDelay(task, 3, rng) for _ in range(50)]
    assert all(4 <= d <= 8 for d in delays) and len(set(delays)) > 1


def test_cron_job_stays_cron_after_error(service):
    register('boom', lambda input: 1 / 0)
    jobid = service.addCronJob('boom', interval=60, now=0)
    logging.getLogger('remotetask').disabled = True
    try:
        service.process(now=60)
    finally:
        logging.getLogger('remotetask').disabled = False
    job = service.jobs[jobid]
    assert (job.status, job.eta) == (CRONJOB, 120)
    assert job.error == 'ZeroDivisionError: division by zero'


def test_cancelled_cron_job_can_be_rescheduled(service):
    jobid = service.addCronJob('echo', 'x', hour=(3,), now=0)
    service.cancel(jobid)
    service.reschedule(jobid, now=0)
    assert (service.getStatus(jobid), service.jobs[jobid].eta) == (CRONJOB,
                                                                   3 * 3600)


def test_retry_and_delete_and_clean_before(service):
    register('fail', lambda input: (_ for _ in ()).throw(TaskError('no')))
    failed = service.add('fail', now=0)
    done = service.add('echo', now=0)
    service.process(now=0)
    service.retry(failed, now=5)
    assert service.getStatus(failed) == QUEUED
    service.process(now=5)
    service.clean(before=3)         # only 'done' ended before 3
    assert done not in service.jobs and failed in service.jobs
    service.delete(failed)
    assert len(service.jobs) == 0 and not checkConsistency(service)


# -- leases, reaping, maintenance ----------------------------------------------------

def test_expired_lease_requeues_until_max_starts(service):
    register('slow', len, max_starts=2)
    jobid = service.add('slow', 'abc', now=0)
    job = service.claim(now=0, worker='w1', lease=10)[0]
    assert (job.status, job.worker, job.starts, job.lease_expires) == (
        PROCESSING, 'w1', 1, 10)
    assert service.reap(now=9) == []
    assert service.reap(now=11) == [jobid]
    assert (job.status, job.starts) == (QUEUED, 1)
    assert job.attempts[-1]['outcome'] == 'lost'
    service.claim(now=12, worker='w2', lease=10)
    assert job.starts == 2
    service.reap(now=30)
    assert job.status == ERROR
    assert 'started 2 times, the maximum (max_starts=2)' in job.error
    assert not checkConsistency(service)


def test_claim_only_the_tasks_a_worker_has(service):
    register('other', len)
    foreign = [service.add('other', 'x', now=i) for i in range(5)]
    mine = service.add('echo', 'y', now=10)
    claimed = service.claim(now=20, tasks={'echo'}, limit=3)
    assert [job.id for job in claimed] == [mine]
    assert all(service.getStatus(i) == QUEUED for i in foreign)
    assert service.claim(now=20, tasks={'echo'}) == []
    assert len(service.claim(now=20, tasks={'echo', 'other'}, limit=9)) == 5


def test_claim_token_detects_a_lost_claim(service):
    service.add('echo', now=0)
    job = service.claim(now=0, lease=1)[0]
    token = service.claimToken(job)
    assert service.owns(job, token)
    service.reap(now=5)
    service.claim(now=5, lease=1)
    assert not service.owns(job, token)


def test_time_limit_ends_an_overrunning_job(service):
    register('slow', len, time_limit=5)
    jobid = service.add('slow', 'x', now=0)
    service.claim(now=0, lease=100)
    assert service.reap(now=4) == []
    assert service.reap(now=6) == [jobid]
    assert service.getStatus(jobid) == ERROR
    assert service.getError(jobid) == 'time limit of 5s exceeded'


def test_hand_back(service):
    jobid = service.add('echo', now=0)
    job = service.claim(now=0, lease=10)[0]
    service.handBack(job, now=1)
    assert (job.status, job.starts) == (QUEUED, 0)
    assert job.attempts[-1]['outcome'] == 'handed back'


def test_maintain_runs_hooks_and_survives_a_failing_one(service, caplog):
    seen = []

    @zope.interface.implementer(interfaces.IServiceMaintenance)
    class Hook:
        def __init__(self, fail):
            self.fail = fail

        def __call__(self, service, now):
            seen.append((self.fail, now))
            if self.fail:
                raise RuntimeError('broken hook')
    gsm = zope.component.getGlobalSiteManager()
    gsm.registerUtility(Hook(True), interfaces.IServiceMaintenance, 'a')
    gsm.registerUtility(Hook(False), interfaces.IServiceMaintenance, 'b')
    with caplog.at_level(logging.ERROR, logger='remotetask'):
        service.maintain(now=3)
    assert seen == [(True, 3), (False, 3)]
    assert 'broken hook' in caplog.text


# -- events ---------------------------------------------------------------------------

def test_events_and_a_failing_subscriber(service, caplog):
    seen = []

    def subscriber(event):
        seen.append(type(event).__name__)
        if isinstance(event, events.JobStarted):
            raise RuntimeError('subscriber bug')
    zope.event.subscribers.append(subscriber)
    try:
        register('fail', lambda i: (_ for _ in ()).throw(TaskError('x')))
        service.add('echo')
        service.add('fail')
        service.cancel(service.add('echo'))
        with caplog.at_level(logging.ERROR, logger='remotetask'):
            service.process()
    finally:
        zope.event.subscribers.remove(subscriber)
    assert seen == ['JobCancelled', 'JobStarted', 'JobCompleted',
                    'JobStarted', 'JobFailed']
    assert service.count(COMPLETED) == 1
    assert 'subscriber bug' in caplog.text


# -- in a database ------------------------------------------------------------------------

def test_failed_task_writes_are_rolled_back_job_outcome_kept(filedb):
    db = filedb()
    conn = db.open()
    root = conn.root()
    root['tasks'] = service = TaskService()

    def half_done(input):
        from remotetask.job import currentJob
        currentJob().service.__parent__ = 'written by the task'
        conn.root()['written'] = True
        raise TaskError('failed halfway')
    register('half', half_done)
    jobid = service.add('half')
    transaction.commit()
    service.process()
    transaction.commit()
    conn.close()
    conn = filedb().open() if False else db.open()
    root = conn.root()
    assert 'written' not in root
    assert root['tasks'].getStatus(jobid) == ERROR
    assert root['tasks'].__parent__ is None
    conn.close()


def test_task_that_aborts_or_commits_itself(filedb):
    """In the eager mode (claim and run in the caller's transaction) a task
    that commits keeps what it committed and the job's outcome is recorded;
    one that aborts undoes its own claim: ``LeaseLost`` says so (a
    TransientError) and the job is back in the queue, consistent."""
    from remotetask.interfaces import LeaseLost
    db = filedb()
    conn = db.open()
    conn.root()['tasks'] = service = TaskService()

    def aborts(input):
        transaction.abort()
        return 'aborted'

    def commits(input):
        conn.root()['committed'] = input
        transaction.commit()
        raise TaskError('after commit')
    register('aborts', aborts)
    register('commits', commits)
    transaction.commit()
    c = service.add('commits')
    transaction.commit()
    logging.getLogger('remotetask').disabled = True
    try:
        service.process()
    finally:
        logging.getLogger('remotetask').disabled = False
    transaction.commit()
    assert service.getStatus(c) == ERROR
    assert service.getError(c) == 'after commit'
    assert conn.root()['committed'] is None
    a = service.add('aborts')
    transaction.commit()
    with pytest.raises(LeaseLost, match='no longer processing'):
        service.process()
    transaction.abort()
    assert service.getStatus(a) == QUEUED
    assert not checkConsistency(service)
    conn.close()


def test_concurrent_adds_do_not_conflict(filedb):
    db = filedb()
    tm0 = transaction.TransactionManager()
    conn0 = db.open(tm0)
    conn0.root()['tasks'] = TaskService()
    register('echo', lambda input: input)
    # The first job of a task creates its entry in the task index (two
    # first jobs of one task at once conflict, once: retried).
    conn0.root()['tasks'].add('echo', 'first')
    tm0.commit()
    tms = [transaction.TransactionManager() for _ in range(3)]
    services = [db.open(tm).root()['tasks'] for tm in tms]
    ids = [s.add('echo', i) for i, s in enumerate(services)]
    assert ids == [2, 3, 4]         # one process: its blocks are shared
    for tm in tms:
        tm.commit()     # no ConflictError: BTrees resolve the inserts
    conn0.sync()
    service = conn0.root()['tasks']
    assert sorted(service.jobs) == [1] + ids
    assert service.count(QUEUED) == 4 and not checkConsistency(service)


def test_concurrent_claims_of_one_job_conflict(filedb):
    db = filedb()
    tm0 = transaction.TransactionManager()
    conn0 = db.open(tm0)
    conn0.root()['tasks'] = s0 = TaskService()
    register('echo', lambda input: input)
    s0.add('echo', now=0)
    tm0.commit()
    tms = [transaction.TransactionManager() for _ in range(2)]
    services = [db.open(tm).root()['tasks'] for tm in tms]
    assert [len(s.claim(now=1, worker=str(i))) for i, s in
            enumerate(services)] == [1, 1]
    tms[0].commit()
    with pytest.raises(ConflictError):
        tms[1].commit()
    tms[1].abort()


def _bytes_of_last_transaction(db):
    storage = db.storage
    it = storage.iterator(storage.lastTransaction())
    try:
        for txn in it:
            return sum(len(record.data or b'') for record in txn)
    finally:
        it.close()


def test_add_and_claim_cost_does_not_grow_with_the_queue(filedb):
    """The bytes one add (and one claim) writes are the same with 100 and
    with 20,000 jobs queued: nothing is rewritten in full."""
    db = filedb()
    conn = db.open()
    conn.root()['tasks'] = service = TaskService()
    register('echo', lambda input: input)
    transaction.commit()
    costs = {}
    for size in (100, 20000):
        while len(service._queue) < size:
            for i in range(1000):
                if len(service._queue) >= size:
                    break
                service.add('echo', i, now=len(service._queue))
            transaction.commit()
        service.add('echo', 'probe', now=size)
        transaction.commit()
        add = _bytes_of_last_transaction(db)
        service.run(service.claim(now=size * 2)[0])
        transaction.commit()
        claim = _bytes_of_last_transaction(db)
        costs[size] = (add, claim)
    (add1, claim1), (add2, claim2) = costs[100], costs[20000]
    assert add2 < 2 * add1 + 2000, costs
    assert claim2 < 2 * claim1 + 2000, costs
    conn.close()


def test_service_survives_close_and_reopen_with_counts(filedb):
    db = filedb()
    conn = db.open()
    conn.root()['tasks'] = service = TaskService()
    register('echo', lambda input: input)
    for i in range(5):
        service.add('echo', i, now=0)
    service.add('echo', 'later', delay=50, now=0)
    service.process(now=0)
    service.add('echo', 'waiting', now=0)
    transaction.commit()
    conn.close()
    db.close()
    conn = filedb().open()
    service = conn.root()['tasks']
    assert service.counts()[COMPLETED] == 5
    assert service.count(DELAYED) == 1 and service.count(QUEUED) == 1
    assert not checkConsistency(service)
    service.process(now=100)
    transaction.commit()
    assert service.count(COMPLETED) == 7
    conn.close()


# -- ZCML -----------------------------------------------------------------------------------

def test_zcml_file_registers_tasks(tmp_path, service):
    path = tmp_path / 'tasks.zcml'
    path.write_text('''
    <configure xmlns="http://namespaces.zope.org/zope"
               xmlns:remotetask="http://namespaces.zope.org/remotetask">
      <include package="remotetask" />
      <remotetask:task name="sum" function="remotetask.examples.sum_"
                       max_retries="2" time_limit="10" />
      <utility name="upper" provides="remotetask.interfaces.ITask"
               component="remotetask.tests.tasks.upper" />
    </configure>''')
    from remotetask import zcml
    zcml.loadFile(str(path))
    tasks = service.getAvailableTasks()
    # Importing remotetask.examples (for sum_) registers the examples too
    # (``--import remotetask.examples``): echo, fail, sleep and sum.
    assert {'sum', 'upper'} <= set(tasks)
    assert set(tasks) <= {'echo', 'fail', 'sleep', 'sum', 'upper'}
    assert (tasks['sum'].max_retries, tasks['sum'].time_limit) == (2, 10.0)
    a = service.add('sum', [1, 2])
    b = service.add('upper', 'abc')
    service.process()
    assert (service.getResult(a), service.getResult(b)) == (3.0, 'ABC')


def test_zcml_refuses_a_bad_function(tmp_path):
    from zope.configuration.exceptions import ConfigurationError

    from remotetask import zcml
    with pytest.raises(ConfigurationError):
        zcml.loadString('''
        <configure xmlns:remotetask="http://namespaces.zope.org/remotetask">
          <remotetask:task name="x" function="remotetask.nosuchthing" />
        </configure>''')


def test_examples_zcml_loads():
    from remotetask import zcml
    import remotetask as pkg
    zcml.loadFile(os.path.join(os.path.dirname(pkg.__file__),
                               'examples.zcml'))
    assert {'echo', 'sum', 'sleep', 'fail'} <= set(
        TaskService().getAvailableTasks())

"""Claiming ahead and loading ahead: the default ``batch='auto'`` of a
Processor, and the prefetching that makes a claim or a run cost a few round
trips to ZEO or RelStorage rather than one per object.

The storage here is a MappingStorage whose ``prefetch`` records what it is
asked for (ZEO's and RelStorage's load those objects in the background);
processors run on a FileStorage as in test_processor.py.
"""
import time

import pytest
import transaction
import ZODB
from BTrees.LOBTree import LOTreeSet
from BTrees.OOBTree import OOTreeSet
from ZODB.MappingStorage import MappingStorage

from remotetask import processor as processormod
from remotetask.processor import Processor
from remotetask.service import TaskService
from remotetask.testing import addInLanes
from remotetask.structures import IdIndex, firstLeaf, leaves, prefetch
from remotetask.tests.test_processor import env, task  # noqa: F401


# -- structures ---------------------------------------------------------------

def test_leaves_finds_the_bucket_of_each_key():
    tree = LOTreeSet(range(1000))
    for key in (0, 59, 60, 500, 999, 10 ** 6):
        [bucket] = leaves(tree, [key])
        assert bucket.minKey() <= min(key, 999) <= bucket.maxKey()
    # Two keys in one bucket: the bucket once.
    assert len(leaves(tree, [1, 2])) == 1
    assert len(leaves(tree, [1, 998])) == 2
    assert firstLeaf(tree).minKey() == 0


def test_small_trees_keep_their_bucket_inline():
    assert leaves(LOTreeSet([1, 2, 3]), [2]) == []
    assert firstLeaf(LOTreeSet([1])) is None
    assert leaves(LOTreeSet(), [1]) == []
    queue = OOTreeSet([(float(i), i) for i in range(200)])
    assert firstLeaf(queue).minKey() == (0.0, 0)


def test_status_indexes_have_big_leaves():
    index = IdIndex(range(1, 2001))
    # 2,000 ids fit in a handful of buckets (LOTreeSet: about 60).
    assert 2 <= len(index.__getstate__()[0]) // 2 + 1 <= 8
    completed = TaskService()._index['completed']
    # Partitions are made by their first id (structures.IdSet).
    assert all(part is None for part in completed.partitions)
    for jobid in range(1, 64001, 1000):
        completed.insert(jobid)
    assert all(isinstance(part, IdIndex) for part in completed.partitions)


class RecordingStorage(MappingStorage):
    """A MappingStorage with ZEO's ``prefetch(oids, tid)``: records calls."""

    def __init__(self):
        MappingStorage.__init__(self)
        self.prefetched = []

    def prefetch(self, oids, tid):
        self.prefetched.append(list(oids))


@pytest.fixture
def recording():
    storage = RecordingStorage()
    db = ZODB.DB(storage)
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    yield storage, tm, conn
    tm.abort()
    conn.close()
    db.close()


def test_prefetch_still_works_after_a_savepoint(recording):
    storage, tm, conn = recording
    with tm:
        conn.root()['a'] = LOTreeSet([1])
        conn.root()['b'] = LOTreeSet([1])
        conn.root()['c'] = LOTreeSet([1])
    conn.cacheMinimize()        # all ghosts again
    tm.begin()
    a, b, c = conn.root()['a'], conn.root()['b'], conn.root()['c']
    a.insert(2)
    tm.savepoint()      # what service.run takes before each task
    # ZODB's Connection.prefetch turns into a no-op for good here (the
    # savepoint's temporary storage has no prefetch) ...
    conn.prefetch([b])
    conn.prefetch([b])
    assert storage.prefetched == []
    # ... structures.prefetch asks the connection's storage itself, for
    # ghosts only (a loaded object is up to date).
    prefetch(conn, [a, b, c, None, LOTreeSet()])
    assert storage.prefetched == [[b._p_oid, c._p_oid]]
    b._p_activate()
    prefetch(conn, [a, b])
    assert storage.prefetched == [[b._p_oid, c._p_oid]]


def test_a_claim_loads_its_jobs_in_one_round(recording):
    storage, tm, conn = recording
    task('echo', lambda x: x)
    with tm:
        service = conn.root()['tasks'] = TaskService()
        ids = [service.add('echo', i) for i in range(20)]
    # A worker's connection: nothing loaded yet.
    wtm = transaction.TransactionManager()
    wconn = conn.db().open(wtm)
    try:
        with wtm:
            claimed = wconn.root()['tasks'].claim(limit=5, worker='w',
                                                  lease=30)
        jobs = {service.jobs[i]._p_oid: i for i in ids}
        rounds = [[oid for oid in r if oid in jobs]
                  for r in storage.prefetched]
        # The 5 claimed jobs were asked for together, in one round.
        assert [sorted(jobs[oid] for oid in r) for r in rounds if r] == [
            sorted(job.id for job in claimed)]
        # And first, the indexes and counters a claim writes.
        first = storage.prefetched[0]
        for ob in (service._index['queued'], service._index['processing'],
                   service._counts):
            assert ob._p_oid in first
    finally:
        wtm.abort()
        wconn.close()


# -- batch='auto' -------------------------------------------------------------

def test_auto_batch_claims_one_until_it_has_seen_a_job(env):
    p = Processor(env.db)
    assert p.batch == 'auto'
    assert p.claimSize() == 1
    assert p.stats['claim_size'] == 1


def test_a_lone_job_is_measured_without_its_commit(env, monkeypatch):
    # The first job of a processor runs alone (claimSize 1), and its
    # commit is no part of what the next claims should take: a group of
    # such jobs commits once.  The clock the processor reads jumps by
    # 1,000 s during the commit only (a commit hook moves it).
    import types
    jump = [0.0]
    clock = types.SimpleNamespace(
        **{name: getattr(time, name) for name in dir(time)
           if not name.startswith('_')})
    clock.monotonic = lambda: time.monotonic() + jump[0]
    monkeypatch.setattr(processormod, 'time', clock)

    def slowCommit(x):
        transaction.get().addBeforeCommitHook(
            lambda: jump.__setitem__(0, jump[0] + 1000.0))
        return x
    task('slowcommit', slowCommit)
    env.add('slowcommit', 1)
    p = env.processor()
    env.wait(lambda: p.stats['completed'] == 1)
    assert jump[0] == 1000.0        # the commit did happen, and jumped
    assert p._duration < 1.0
    assert p._taskDurations['slowcommit'] < 1.0
    assert p.claimSize() > 1


def test_the_first_measure_is_replaced_by_the_second(env):
    # The first job ran alone from a cold start: its duration says little,
    # and averaging it in kept the claims small for the first dozens of
    # jobs.  The second measure replaces it; then a moving average.
    p = Processor(env.db)
    p._measured(0.030, 'ten', 0.003)
    assert p.claimSize() == 3
    p._measured(0.010, 'ten', 0.001)
    assert p._duration == pytest.approx(0.010)
    assert p._taskDurations['ten'] == pytest.approx(0.010)
    assert p._cpuShare == pytest.approx(0.1)
    assert p.claimSize() >= 9           # about 0.1 s of 10 ms jobs
    p._measured(0.020, 'ten', 0.020)
    w = processormod.MEASURE_WEIGHT
    assert p._duration == pytest.approx(0.010 + w * 0.010)
    assert p._cpuShare == pytest.approx(0.1 + w * 0.9)
    # Task by task: another task's first measure is its own first.
    p._measured(0.5, 'long')
    assert p._taskDurations['long'] == 0.5
    p._measured(0.3, 'long')
    assert p._taskDurations['long'] == pytest.approx(0.3)
    assert p._taskDurations['ten'] == pytest.approx(0.010 + w * 0.010)


@pytest.mark.parametrize('value', [0, -1, 'x', 'AUTO', 1.5, None])
def test_batch_is_auto_or_a_whole_number(env, value):
    with pytest.raises(ValueError, match='batch'):
        Processor(env.db, batch=value)


def test_short_jobs_are_claimed_many_at_a_time(env):
    task('echo', lambda x: x)
    for i in range(300):
        env.add('echo', i)
    p = env.processor()
    env.wait(lambda: env.service.count('completed') == 300)
    env.wait(lambda: p.stats['completed'] == 300)
    stats = p.stats
    assert 1 < stats['claim_size'] <= processormod.AUTO_MAX
    # Far fewer commits than two per job (a claim and a run each).
    assert stats['commits'] < 300, stats
    # Runs of one worker thread still never overlap, and each job's start
    # is its run's, not its claim's.
    runs = sorted((j.started, j.completed) for j in
                  (env.service.jobs[i] for i in env.service.jobIds()))
    for (_, end), (start, _) in zip(runs, runs[1:]):
        assert end <= start
    for job in env.service.jobs.values():
        assert job.attempts[-1]['start'] == job.started


def test_slow_jobs_are_claimed_one_at_a_time(env):
    task('slow', lambda x: time.sleep(processormod.AUTO_SECONDS * 1.5))
    for i in range(3):
        env.add('slow', i)
    p = env.processor()
    env.wait(lambda: p.stats['completed'] == 3)
    assert p.claimSize() == 1
    assert p.stats['claimed'] == 3


def test_jobs_held_too_long_go_back_to_the_queue(env, monkeypatch):
    # The estimate says "short" (a no-op ran first), then the jobs turn
    # out slow: what was claimed ahead and not started within HOLD_SECONDS
    # goes back to the queue, and still runs.
    monkeypatch.setattr(processormod, 'HOLD_SECONDS', 0.2)
    monkeypatch.setattr(processormod, 'GROUP_SECONDS', 0.0)
    task('slow', lambda x: time.sleep(0.15))
    ids = [env.add('slow', i) for i in range(6)]
    p = Processor(env.db, lease=5.0, poll_interval=0.5)
    p._duration = 0.001         # as if the recent jobs had been no-ops
    assert p.claimSize() == processormod.AUTO_MAX
    env.processors.append(p)
    p.start()
    env.wait(lambda: env.service.count('completed') == 6)
    assert p.stats['handed_back'] >= 1
    outcomes = [a['outcome'] for i in ids
                for a in env.job(i).attempts]
    assert outcomes.count('completed') == 6
    assert 'handed back' in outcomes
    for i in ids:
        assert env.job(i).starts == 1


def test_a_fixed_batch_is_kept(env):
    task('echo', lambda x: x)
    for i in range(10):
        env.add('echo', i)
    p = env.processor(batch=1)
    env.wait(lambda: p.stats['completed'] == 10)
    assert p.claimSize() == 1
    assert p.stats['commits'] == 20      # a claim and a run per job


# -- where spread claims go -----------------------------------------------------

def test_spread_claims_visit_every_partition_in_their_own_stride(monkeypatch):
    from remotetask import structures
    from remotetask.structures import JobQueue, stride
    queue = JobQueue()
    queue.put(7000, 1.0)                  # one entry, in partition 7
    strides = set()
    structures._thread()                  # this thread's state exists
    for lane in range(64):
        monkeypatch.setattr(structures._local, 'lane', lane)
        step = stride(16)
        assert step % 2 == 1
        strides.add(step)
        for start in range(16):
            assert queue.due(2.0, 1, start) == [(1.0, 7000)]
    # Threads go round in different orders, so that workers whose
    # partitions ran dry do not all move on to the same next ones.
    assert len(strides) == 8
    assert stride(12) == 1                # not a power of two: one by one


def _otherWorker(db, limit, run=False):
    """Another worker's claim (and run) of ``limit`` jobs, committed."""
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    try:
        with tm:
            service = conn.root()['tasks']
            for job in service.claim(limit=limit, worker='other'):
                if run:
                    service.run(job)
        return tm, conn
    finally:
        conn.close()


def test_a_claim_loads_ahead_what_the_others_claims_changed(recording):
    # Every claim changes its lane's counter and tally; the next claim of
    # a worker asks for them in its first round of loads, not one round
    # trip each later on.
    storage, tm, conn = recording
    task('echo', lambda x: x)
    with tm:
        service = conn.root()['tasks'] = TaskService()
        for i in range(20):
            service.add('echo', i)
    with tm:
        first = service.claim(limit=2, worker='w')
    _otherWorker(conn.db(), 2)
    tm.begin()
    counter = service._queue._counter(first[0].id)
    tally = service._counts.tallyFor(first[0].id)
    assert counter._p_changed is None and tally._p_changed is None
    del storage.prefetched[:]
    with tm:
        assert len(service.claim(limit=2, worker='w')) == 2
    assert storage.prefetched
    assert counter._p_oid in storage.prefetched[0]
    assert tally._p_oid in storage.prefetched[0]


def test_a_run_loads_ahead_the_statistics_its_end_writes(recording):
    from remotetask import stats
    storage, tm, conn = recording
    seen = []
    task('note', lambda x: seen.append(list(storage.prefetched)))
    with tm:
        service = conn.root()['tasks'] = TaskService()
        for i in range(4):
            service.add('note', i)
    with tm:
        [job] = service.claim(limit=1, worker='w')
    # Another worker's run counts in the statistics: the minute's and the
    # hour's slots and the totals, which this run's end writes too.
    _otherWorker(conn.db(), 1, run=True)
    tm.begin()
    now = time.time()
    written = stats.written(service, now)
    assert len(written) == 3
    assert all(ob._p_changed is None for ob in written)     # invalidated
    assert written[-1] is service._stats.totals
    del storage.prefetched[:]
    with tm:
        service.run(job)
    # Asked for before the task ran (the other worker's ran first).
    asked = [oid for round in seen[-1] for oid in round]
    for ob in written:
        assert ob._p_oid in asked
    assert stats.written(TaskService.__new__(TaskService), now) == ()


def test_a_claim_stays_where_it_found_jobs_and_moves_on_conflict(recording):
    from remotetask import structures
    storage, tm, conn = recording
    task('echo', lambda x: x)
    with tm:
        service = conn.root()['tasks'] = TaskService()
    addInLanes(conn.db(), 4, 16, 'echo', 'tasks')   # 4 lanes' partitions
    part = service._queue.partitionOf
    n = len(service._queue._parts)
    structures.movePartition()
    with tm:
        first = part(service.claim(limit=1, worker='w', spread=True)[0].id)
    for _ in range(2):
        assert structures.claimPartition(n) == first
        with tm:
            assert part(service.claim(limit=1, worker='w',
                                      spread=True)[0].id) == first
    structures.movePartition()            # what a Processor does on conflict
    assert structures._local.part is None


# -- a group records its outcomes after its tasks ----------------------------

def test_deferred_outcomes_roll_back_the_failing_task_alone(env):
    """``service.run(defer=True)``: the tasks of a group run first, each
    under its savepoint, and their outcomes are recorded afterwards; a
    failing task's writes are rolled back, the others' stay, and each job
    ends when its task did."""
    from remotetask.tests.test_processor import Recorder
    import zope.component

    class Failing(Recorder):
        def __call__(self, service, jobid, input):
            super().__call__(service, jobid, input)
            if input == 'bad':
                raise ValueError('bad input')
            return input
    zope.component.provideUtility(Failing(), name='record')
    ids = [env.add('record', x) for x in ('a', 'bad', 'c')]
    service = env.service
    claimed = service.claim(worker='w', lease=60, limit=3)
    env.tm.commit()
    assert sorted(job.id for job in claimed) == ids
    service = env.service
    finishers = []
    for jobid in ids:
        finishers.append(service.run(service.jobs[jobid], defer=True))
        time.sleep(0.01)
        # Nothing recorded yet: the job is still processing.
        assert service.jobs[jobid].status == 'processing'
    outcomes = [finish() for finish in finishers]
    env.tm.commit()
    assert outcomes == ['completed', 'error', 'completed']
    seen = env.root['seen']
    assert sorted(seen.keys()) == ['a', 'c']
    jobs = [env.job(jobid) for jobid in ids]
    assert 'bad input' in jobs[1].error
    assert [j.output for j in (jobs[0], jobs[2])] == ['a', 'c']
    # Each job ended when its task did, before the next one started.
    for job in jobs:
        assert job.started <= job.completed
    assert jobs[0].completed <= jobs[1].started
    assert jobs[1].completed <= jobs[2].started
    assert env.service.count('processing') == 0

"""Concurrent adds write different objects (issue 18).

Real threads of one process on FileStorage (each with its own connection,
as request threads have), while a Processor's threads drain the queue;
real producer processes over ZEO are in test_scale_concurrency.py (the
same 1 % bound on their retried transactions).  No assertion depends on
timing: the tests poll with generous deadlines.
"""
import random
import threading
import time

import pytest
import transaction
import ZODB
import ZODB.FileStorage
from BTrees.LOBTree import LOTreeSet

from remotetask import structures
from remotetask.db import getService
from remotetask.interfaces import COMPLETED, QUEUED
from remotetask.processor import Processor
from remotetask.service import TaskService
from remotetask.retry import attempts
from remotetask.structures import (IdSet, IdSetView, JobTree, intersect,
                                   partitionOf)
from remotetask.testing import checkConsistency
from remotetask.tests import scale_agents
from remotetask.tests.test_batching import recording  # noqa: F401

THREADS = 8
EACH = 100


# -- the partitioned structures, read as one -----------------------------------

def test_an_id_set_reads_as_one_sorted_set():
    rng = random.Random(5)
    ids = sorted(rng.sample(range(1, 200000), 3000))
    s = IdSet()
    for jobid in ids:
        assert s.insert(jobid) == 1
    assert s.insert(ids[0]) == 0
    assert len({partitionOf(i) for i in ids}) == structures.PARTITIONS
    assert list(s) == ids and len(s) == len(ids) and s
    assert list(s.keys(min=ids[10], max=ids[20])) == ids[10:21]
    assert list(s.keys(min=ids[10], max=ids[20], excludemin=True,
                       excludemax=True)) == ids[11:20]
    assert list(s.keys(min=0)) == ids               # never the sentinel
    assert s.maxKey() == ids[-1] and s.minKey() == ids[0]
    assert s.maxKey(ids[100] - 1) == ids[99]
    assert s.minKey(ids[100] + 1) == ids[101]
    assert ids[5] in s and 0 not in s and 'x' not in s
    for jobid in ids[::2]:
        s.remove(jobid)
    assert list(s) == ids[1::2]
    with pytest.raises(KeyError):
        s.remove(0)
    with pytest.raises(ValueError):
        s.insert(0)
    empty = IdSet()
    assert not empty and len(empty) == 0 and list(empty) == []
    with pytest.raises(ValueError):
        empty.maxKey()
    with pytest.raises(ValueError):
        empty.minKey()
    # Intersections, partition by partition, with sets of any kind.
    other = LOTreeSet(ids[:1000:3])
    expected = sorted(set(ids[1::2]) & set(other))
    assert list(intersect(s, other)) == expected
    assert list(intersect(other, s)) == expected
    both = IdSet()
    for jobid in other:
        both.insert(jobid)
    assert list(intersect(s, both)) == expected
    view = IdSetView(both.partitions)
    assert list(intersect(view, s)) == expected and len(view) == len(other)


def test_a_job_tree_is_a_mapping_in_id_order():
    tree = JobTree()
    ids = [5, 1500, 2, 16001, 999, 3000]
    for jobid in ids:
        tree[jobid] = 'job %d' % jobid
    ordered = sorted(ids)
    assert list(tree) == list(tree.keys()) == ordered
    assert list(tree.values()) == ['job %d' % i for i in ordered]
    assert list(tree.items(min=999, max=3000)) == [
        (i, 'job %d' % i) for i in (999, 1500, 3000)]
    assert tree[1500] == 'job 1500' and tree.get(7) is None
    assert tree.get('x') is None and 'x' not in tree
    assert len(tree) == 6 and tree.maxKey() == 16001
    assert tree.maxKey(16000) == 3000 and tree.minKey(6) == 999
    del tree[2]
    assert 2 not in tree and len(tree) == 5
    with pytest.raises(KeyError):
        tree[2]


def test_tallies_merge_concurrent_changes(tmp_path):
    db = ZODB.DB(ZODB.FileStorage.FileStorage(str(tmp_path / 'T.fs')))
    tms = [transaction.TransactionManager() for i in range(2)]
    conns = [db.open(tm) for tm in tms]
    with tms[0]:
        conns[0].root()['t'] = structures.Tally()
        conns[0].root()['t'].change('queued', 3)
    for tm in tms:
        tm.begin()
    a, b = [c.root()['t'] for c in conns]
    a.change('queued', -1)
    a.change('processing', 1)
    b.change('queued', 2)
    tms[0].commit()
    tms[1].commit()                     # merged: no ConflictError
    tms[0].begin()
    assert conns[0].root()['t'].counts == {'queued': 4, 'processing': 1}
    tms[0].abort()
    db.close()


# -- real threads on FileStorage -----------------------------------------------

@pytest.fixture
def filedb(tmp_path):
    scale_agents.register()
    db = ZODB.DB(ZODB.FileStorage.FileStorage(str(tmp_path / 'Data.fs')))
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    with tm:
        getService(conn, create=True)
    conn.close()
    yield db
    db.close()


def _written(conn):
    """(oid, class name) of the stored objects the connection's current
    transaction changed."""
    return {(ob._p_oid, type(ob).__name__)
            for ob in conn._registered_objects if ob._p_oid is not None}


def produce(db, threads, each, task='scale.noop'):
    """``threads`` threads adding ``each`` jobs, one per transaction, all
    running at once.  Returns per thread: its ids, the objects its adds
    wrote after its first add, and its retry stats."""
    barrier = threading.Barrier(threads)
    found = [None] * threads

    def run(n):
        tm = transaction.TransactionManager()
        conn = db.open(tm)
        stats, ids, written = {}, [], set()
        try:
            barrier.wait()
            for i in range(each):
                for attempt in attempts(tm, conflicts=50, stats=stats):
                    with attempt:
                        jobid = getService(conn).add(task, (n, i))
                        if i:       # the first created the task's index
                            changed = _written(conn)
                ids.append(jobid)
                if i:
                    written |= changed
            barrier.wait()          # all alive until the end: lanes differ
        finally:
            conn.close()
        found[n] = (ids, written, stats)
    workers = [threading.Thread(target=run, args=(n,))
               for n in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(300)
    assert all(f is not None for f in found), 'a producer thread failed'
    return found


def waitFor(db, predicate, what, timeout=120.0):
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    try:
        deadline = time.monotonic() + timeout
        while True:
            with tm:
                service = getService(conn)
                if predicate(service):
                    return
            if time.monotonic() > deadline:
                raise AssertionError('timed out waiting for ' + what)
            time.sleep(0.2)
    finally:
        conn.close()


@pytest.mark.slow
def test_threads_add_without_writing_the_same_objects(filedb):
    """8 threads add one job per transaction while 4 Processor threads
    drain the queue: the adds of different threads write no object in
    common, and at most 1 % of the add transactions are retried."""
    processor = Processor(filedb, concurrency=4, lease=60.0,
                          maintenance_interval=30.0)
    processor.start()
    try:
        found = produce(filedb, THREADS, EACH)
        waitFor(filedb, lambda s: s.count(COMPLETED) == THREADS * EACH,
                'all jobs completed')
    finally:
        processor.stop(timeout=60)
    lanes = [{partitionOf(jobid) for jobid in ids} for ids, w, s in found]
    # Each thread numbered its jobs in a lane of its own...
    assert all(len(lane) == 1 for lane in lanes), lanes
    assert len(set.union(*lanes)) == THREADS
    # ... so its adds wrote objects no other thread's adds wrote.
    owners = {}
    for n, (ids, written, stats) in enumerate(found):
        for oid, name in written:
            owners.setdefault((oid, name), set()).add(n)
    shared = {name for (oid, name), who in owners.items() if len(who) > 1}
    assert shared == set(), shared
    transactions = sum(s['transactions'] for i, w, s in found)
    conflicts = sum(s.get('conflicts', 0) for i, w, s in found)
    print('\n[producers threads] %d add transactions, %d retried: %s' % (
        transactions, conflicts,
        [s.get('conflicts_by_class') for i, w, s in found]))
    assert transactions == THREADS * EACH
    assert conflicts <= transactions // 100, [
        s.get('conflicts_by_class') for i, w, s in found]
    tm = transaction.TransactionManager()
    conn = filedb.open(tm)
    with tm:
        service = getService(conn)
        assert checkConsistency(service) == []
        assert sorted(service.jobs) == sorted(
            jobid for ids, w, s in found for jobid in ids)
    conn.close()


def test_a_thread_that_ends_hands_its_lane_on(filedb):
    scale_agents.register()
    first = produce(filedb, 1, 3)[0][0]
    second = produce(filedb, 1, 3)[0][0]
    assert {partitionOf(i) for i in first + second} == {partitionOf(
        first[0])}
    assert second[0] > first[-1]
    # Three threads at once: three lanes (one of them the handed-on one).
    together = produce(filedb, 3, 2)
    assert len({partitionOf(ids[0]) for ids, w, s in together}) == 3


def test_a_service_of_the_older_layout_is_upgraded_when_found(filedb):
    """A service stored before lanes (one tree of jobs, unpartitioned
    indexes and counters, a queue by ``id % 16``) is rebuilt in the lanes'
    layout by the first transaction that finds it; nothing is lost."""
    from BTrees.Length import Length
    from BTrees.LOBTree import LOBTree
    from BTrees.OOBTree import OOBTree
    from remotetask.interfaces import STATUSES
    from remotetask.structures import SENTINEL, JobQueue
    tm = transaction.TransactionManager()
    conn = filedb.open(tm)
    with tm:
        service = getService(conn)
        ids = [service.add('scale.noop', i, delay=60 if i % 3 else None)
               for i in range(40)]
        service.cancel(ids[1])
        claimed = service.claim(limit=2, worker='w', lease=30)
        service.run(claimed[0])
    with tm:
        service = getService(conn)
        counts = service.counts()
        entries = list(service.queue())
        # What an older version stored:
        service.jobs = LOBTree(dict(service.jobs.items()))
        service._index = {s: LOTreeSet([SENTINEL] + list(service.jobIds(s)))
                          for s in STATUSES}
        service._counts = {s: Length(n) for s, n in counts.items()}
        service._byTask = OOBTree({'scale.noop': LOTreeSet(ids)})
        queue = service._queue
        del queue._counters
        queue._parts = tuple(JobQueue(16)._parts)
        queue._length = Length()
        for eta, jobid in entries:
            queue.put(jobid, eta)
        assert queue._parts[5].has_key(entries[0]) == (entries[0][1] % 16
                                                       == 5)
    conn.close()
    conn = filedb.open(tm)
    with tm:
        service = getService(conn)          # upgraded here
    conn.close()
    conn = filedb.open(tm)
    with tm:
        service = getService(conn)
        assert isinstance(service.jobs, JobTree)
        assert sorted(service.jobs) == sorted(ids)
        assert service.counts() == counts
        assert list(service.queue()) == entries
        assert checkConsistency(service) == []
        assert list(service.jobIds(task='scale.noop')) == sorted(ids)
        # and it works on
        more = service.add('scale.noop', 'new')
        job, = service.claim(limit=1, worker='w', lease=30, now=1e12)
        service.run(job)
        assert checkConsistency(service) == []
        assert more in service.jobs
    conn.close()


def test_an_add_loads_what_it_writes_ahead(recording):
    """Over ZEO and RelStorage (a storage with ``prefetch``), an add asks
    for the objects it writes that other connections' commits changed in
    one round, not one round trip each."""
    storage, tm, conn = recording
    scale_agents.register()
    with tm:
        service = conn.root()['tasks'] = TaskService()
    # A producer's connection, whose lane's objects a worker then changes.
    ptm = transaction.TransactionManager()
    pconn = conn.db().open(ptm)
    with ptm:
        # The queued index has 4 partitions per lane (id % 4): the fifth
        # job's is the first's.
        ids = [pconn.root()['tasks'].add('scale.noop', i) for i in range(4)]
    first = ids[0]
    with tm:
        job, = service.claim(worker='w', lease=30)
        assert job.id == first
    del storage.prefetched[:]
    with ptm:
        fifth = pconn.root()['tasks'].add('scale.noop', 5)
    pconn.close()
    queued = service._index[QUEUED]
    assert queued._partFor(fifth) is queued._partFor(first)
    asked = set(storage.prefetched[0])
    lane = service._counts.tallyFor(first)
    for ob in (lane, service._queue._counter(first), queued._partFor(first)):
        assert ob._p_oid in asked

"""The structures behind the queue, and the conflicts they avoid.

Concurrency is shown with two transaction managers on one FileStorage
(which resolves conflicts like a ZEO server does), not with threads: the
order of events is fixed, so the tests are deterministic.
"""
import random

import pytest
import transaction
import ZODB
import ZODB.FileStorage
from BTrees.OOBTree import OOTreeSet
from ZODB.POSException import ConflictError

from remotetask import structures
from remotetask.db import getService
from remotetask.structures import JobQueue
from remotetask.tests import scale_agents


def test_spread_due_takes_only_due_entries_from_a_window(monkeypatch):
    monkeypatch.setattr(structures, '_rng', random.Random(3))
    q = JobQueue(partitions=2)
    # Even numbers in the ids of lane 0, odd ones in lane 1's (1000-1999).
    ids = [i if i % 2 == 0 else 1000 + i for i in range(1, 41)]
    for n, jobid in enumerate(ids, 1):
        q.put(jobid, float(n))
    q.put(100, 1000.0)                        # not due
    seen = set()
    for i in range(50):
        (eta, jobid), = q.due(now=30.0, limit=1, start=0)
        assert eta <= 30.0 and jobid < 1000   # partition 0: lane 0's ids
        # one of the first WINDOW due entries of the partition
        assert jobid <= 2 * structures.WINDOW
        seen.add(jobid)
    assert len(seen) > 1                      # not always the head
    assert [k[1] for k in q.due(now=30.0, limit=3)] == [1001, 2, 1003]
    assert q.due(now=0.5, limit=5, start=1) == []
    assert len(q.due(now=30.0, limit=40, start=1)) == 30


@pytest.fixture
def twoConnections(tmp_path):
    """Two connections with their own transaction managers on a
    FileStorage, a service with 40 queued jobs (few enough that the next
    adds do not split a bucket: a split is what BTrees can not merge)."""
    scale_agents.register()
    db = ZODB.DB(ZODB.FileStorage.FileStorage(str(tmp_path / 'Data.fs')))
    tms = [transaction.TransactionManager() for i in range(2)]
    conns = [db.open(tm) for tm in tms]
    with tms[0]:
        service = getService(conns[0], create=True)
        for i in range(40):
            service.add('scale.noop', i, now=float(i))
    yield tms, conns
    for tm in tms:
        tm.abort()
    db.close()


def services(conns):
    return [getService(c) for c in conns]


def test_removing_the_head_conflicts_the_reason_for_spread(tmp_path):
    """What BTrees can not merge: removing a bucket's first key while
    another transaction changes the same bucket."""
    db = ZODB.DB(ZODB.FileStorage.FileStorage(str(tmp_path / 'B.fs')))
    tm1, tm2 = transaction.TransactionManager(), transaction.TransactionManager()
    c1, c2 = db.open(tm1), db.open(tm2)
    with tm1:
        c1.root()['s'] = OOTreeSet([(1.0, i) for i in range(10)])
    tm2.begin()
    with tm1:
        c1.root()['s'].remove((1.0, 0))        # the head
    c2.root()['s'].remove((1.0, 5))           # another entry
    with pytest.raises(ConflictError):
        tm2.commit()
    tm2.abort()
    tm2.begin()
    with tm1:
        c1.root()['s'].remove((1.0, 3))        # not the head: merged
    c2.root()['s'].remove((1.0, 6))
    tm2.commit()
    assert len(c2.root()['s']) == 7
    db.close()


def test_two_workers_claim_concurrently_without_conflict(twoConnections,
                                                         monkeypatch):
    tms, conns = twoConnections
    # This thread's claim state as a worker thread's first claim finds it,
    # made before the draws below are scripted (it draws a lane number;
    # run alone, this test made it inside the script, which then ran out).
    state = structures._thread()
    state.lane, state.part, state.home = 511025150, None, None
    for tm in tms:
        tm.begin()
    a, b = services(conns)
    picks = iter([0, 5, 2, 2])                 # partitions and window slots
    monkeypatch.setattr(structures, '_rng', type('R', (), {
        'randrange': staticmethod(lambda n: next(picks) % n)})())
    ja, = a.claim(now=100.0, worker='a', lease=30, spread=True)
    jb, = b.claim(now=100.0, worker='b', lease=30, spread=True)
    assert ja.id != jb.id
    tms[0].commit()
    tms[1].commit()                             # merged, no ConflictError
    for tm in tms:
        tm.begin()
    a, b = services(conns)
    assert sorted(b.jobIds('processing')) == sorted([ja.id, jb.id])
    assert b.count('queued') == 38 and b.count('processing') == 2
    from remotetask.testing import checkConsistency
    assert checkConsistency(b) == []


def test_producer_and_worker_do_not_conflict(twoConnections, monkeypatch):
    tms, conns = twoConnections
    # This thread's state fixed before the draws are scripted (as in the
    # test above): a lane, and claims starting at partition 0.
    state = structures._thread()
    state.lane, state.part, state.home = 511025150, 0, None
    picks = iter([3, 1])                       # partition 3, 2nd entry
    monkeypatch.setattr(structures, '_rng', type('R', (), {
        'randrange': staticmethod(lambda n: next(picks) % n)})())
    for tm in tms:
        tm.begin()
    producer, worker = services(conns)
    for i in range(3):
        producer.add('scale.noop', 'new', now=200.0)
    claimed = worker.claim(now=100.0, worker='w', lease=30, spread=True)
    assert len(claimed) == 1
    tms[1].commit()
    tms[0].commit()                             # merged
    tms[0].begin()
    service = services(conns)[0]
    assert service.count('queued') == 42
    assert service.count('processing') == 1
    from remotetask.testing import checkConsistency
    assert checkConsistency(service) == []

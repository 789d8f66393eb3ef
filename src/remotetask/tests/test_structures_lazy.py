"""Status index partitions made lazily (structures.IdSet): an unused
partition is None, readers skip it, and two transactions that made
different partitions of one set merge (IdSet._p_resolveConflict)."""
import threading

import pytest
import transaction
import ZODB
import ZODB.FileStorage
from ZODB.ConflictResolution import PersistentReference
from ZODB.POSException import ConflictError

from remotetask import structures
from remotetask.db import getService
from remotetask.structures import (
    PARTITIONS, SENTINEL, SPREAD, IdIndex, IdSet, WaitingIndex, intersect,
    misplaced, partitionOf, spreadPartitionOf)
from remotetask.tests import scale_agents

SPREAD_PARTS = PARTITIONS * SPREAD


def lane(n, offset=1):
    """An id of lane ``n``."""
    return n * structures.STRIPE + offset


def made(ids):
    return [n for n, part in enumerate(ids.partitions) if part is not None]


def test_a_new_set_has_no_partitions_and_reads_as_empty():
    ids = IdSet(WaitingIndex, SPREAD_PARTS)
    assert made(ids) == []
    assert list(ids) == [] and len(ids) == 0 and not ids
    assert lane(3) not in ids and SENTINEL not in ids
    with pytest.raises(ValueError):
        ids.maxKey()
    with pytest.raises(ValueError):
        ids.minKey()
    with pytest.raises(KeyError):
        ids.remove(lane(3))
    assert list(intersect(ids, IdIndex([lane(3)]))) == []
    assert misplaced(ids) == []


def test_the_first_id_of_a_lane_makes_its_partitions_all_at_once():
    ids = IdSet(WaitingIndex, SPREAD_PARTS)
    assert ids.insert(lane(5)) == 1
    # The lane's SPREAD partitions, each with the sentinel; no other.
    assert made(ids) == list(range(5 * SPREAD, 6 * SPREAD))
    assert all(isinstance(p, WaitingIndex) and SENTINEL in p
               for p in ids.partitions if p is not None)
    before = ids.partitions
    for offset in range(2, 2 + SPREAD):     # ids in each of the 4
        ids.insert(lane(5, offset))
    assert ids.partitions == before         # not made again
    ids.insert(lane(2))
    assert made(ids) == list(range(2 * SPREAD, 3 * SPREAD)) + list(
        range(5 * SPREAD, 6 * SPREAD))
    expected = sorted([lane(5)] + [lane(5, o) for o in range(2, 2 + SPREAD)]
                      + [lane(2)])
    assert list(ids) == expected and len(ids) == len(expected)
    assert ids.maxKey() == max(expected) and ids.minKey() == lane(2)
    assert list(ids.keys(min=lane(3))) == expected[1:]
    assert all(i in ids for i in expected) and lane(7) not in ids
    ids.remove(lane(2))
    assert lane(2) not in ids and len(ids) == len(expected) - 1
    assert misplaced(ids) == []


def test_one_partition_per_lane_sets_make_only_the_lanes():
    ids = IdSet()
    ids.insert(lane(9))
    assert made(ids) == [9]
    ids.prepare(lane(4))                    # made, still empty
    assert made(ids) == [4, 9] and list(ids) == [lane(9)]


def test_intersections_skip_partitions_not_made():
    a = IdSet(IdIndex, SPREAD_PARTS)
    b = IdSet(IdIndex, PARTITIONS)
    c = IdSet(IdIndex, SPREAD_PARTS)
    for i in (lane(1), lane(1, 2), lane(6, 3)):
        a.insert(i)
    for i in (lane(1, 2), lane(6, 3), lane(8)):
        b.insert(i)
    c.insert(lane(6, 3))
    assert list(intersect(a, b)) == [lane(1, 2), lane(6, 3)]
    assert list(intersect(b, a)) == [lane(1, 2), lane(6, 3)]
    assert list(intersect(a, c)) == [lane(6, 3)]
    assert list(intersect(a, IdIndex([lane(1), lane(8)]))) == [lane(1)]
    assert list(intersect(IdIndex([lane(1), lane(8)]), b)) == [lane(8)]


def test_a_set_stored_before_lazy_partitions_keeps_working(tmp_path):
    """A set whose partitions were all made when it was created, stored
    without a factory (what the versions before stored)."""
    db = ZODB.DB(ZODB.FileStorage.FileStorage(str(tmp_path / 'O.fs')))
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    with tm:
        old = IdSet(IdIndex, SPREAD_PARTS)
        old._parts = tuple(IdIndex([SENTINEL]) for _ in range(SPREAD_PARTS))
        del old.__dict__['_factory']
        conn.root()['old'] = old
    db.cacheMinimize()
    with tm:
        old = conn.root()['old']
        assert '_factory' not in old.__dict__ and len(made(old)) == 64
        assert list(old) == [] and len(old) == 0
        old.insert(lane(3))
        old.insert(lane(3, 2))
        old.remove(lane(3))
    with tm:
        old = conn.root()['old']
        assert list(old) == [lane(3, 2)] and len(old) == 1
        assert misplaced(old) == []
    conn.close()
    db.close()


@pytest.fixture
def twoConnections(tmp_path):
    db = ZODB.DB(ZODB.FileStorage.FileStorage(str(tmp_path / 'L.fs')))
    tms = [transaction.TransactionManager() for i in range(2)]
    conns = [db.open(tm) for tm in tms]
    with tms[0]:
        conns[0].root()['ids'] = IdSet(WaitingIndex, SPREAD_PARTS)
    for tm in tms:
        tm.begin()
    yield tms, conns
    for tm in tms:
        tm.abort()
    for conn in conns:
        conn.close()
    db.close()


def test_transactions_that_made_different_partitions_merge(twoConnections):
    tms, conns = twoConnections
    conns[0].root()['ids'].insert(lane(1))
    conns[1].root()['ids'].insert(lane(2))
    conns[1].root()['ids'].insert(lane(7))
    tms[0].commit()
    tms[1].commit()                         # resolved: no ConflictError
    for tm in tms:
        tm.begin()
    for conn in conns:
        ids = conn.root()['ids']
        assert list(ids) == [lane(1), lane(2), lane(7)]
        assert made(ids) == [n for l in (1, 2, 7)
                             for n in range(l * SPREAD, (l + 1) * SPREAD)]
        assert misplaced(ids) == []
    # The merged partitions are the committed objects: later changes of
    # each connection show in the other.
    conns[0].root()['ids'].insert(lane(2, 5))
    tms[0].commit()
    tms[1].begin()
    assert lane(2, 5) in conns[1].root()['ids']


def test_transactions_that_made_the_same_partition_conflict(twoConnections):
    tms, conns = twoConnections
    conns[0].root()['ids'].insert(lane(4))
    conns[1].root()['ids'].insert(lane(4, 2))
    tms[0].commit()
    with pytest.raises(ConflictError):
        tms[1].commit()
    tms[1].abort()
    # Retried, it finds the partitions made.
    conns[1].root()['ids'].insert(lane(4, 2))
    tms[1].commit()
    tms[0].begin()
    assert list(conns[0].root()['ids']) == [lane(4), lane(4, 2)]


def ref(oid):
    return PersistentReference((oid, IdIndex))


def test_resolution_refuses_all_but_partitions_made_on_both_sides():
    resolve = IdSet.__new__(IdSet)._p_resolveConflict
    none = (None,) * 4
    a, b = ref(b'\0' * 7 + b'\1'), ref(b'\0' * 7 + b'\2')

    def state(*parts, factory=IdIndex):
        return {'_factory': factory, '_parts': tuple(parts)}
    merged = resolve(state(*none), state(a, None, None, None),
                     state(None, None, b, None))
    assert merged['_parts'] == (a, None, b, None)
    assert merged['_factory'] is IdIndex
    # the same partition made with different objects
    with pytest.raises(ConflictError):
        resolve(state(*none), state(a, None, None, None),
                state(b, None, None, None))
    # a made partition replaced
    with pytest.raises(ConflictError):
        resolve(state(a, None, None, None), state(b, None, None, None),
                state(a, None, None, b))
    # another attribute changed
    with pytest.raises(ConflictError):
        resolve(state(*none), state(*none, factory=WaitingIndex),
                state(a, None, None, None))
    with pytest.raises(ConflictError):
        resolve(state(*none), dict(state(*none), other=1),
                state(a, None, None, None))
    # a different number of partitions
    with pytest.raises(ConflictError):
        resolve(state(*none), state(None, None), state(a, None, None, None))


def test_producers_of_new_lanes_merge_their_first_adds(tmp_path):
    """Two threads (lanes of their own) each add their first job to a new
    service, at once: their adds make partitions of the same status
    indexes (and of processing and completed, for the workers), and both
    commit."""
    scale_agents.register()
    db = ZODB.DB(ZODB.FileStorage.FileStorage(str(tmp_path / 'P.fs')))
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    with tm:
        getService(conn, create=True)
    conn.close()
    added = threading.Barrier(2)
    turn = [threading.Event(), threading.Event()]
    found = [None, None]

    def run(n):
        ltm = transaction.TransactionManager()
        lconn = db.open(ltm)
        try:
            ltm.begin()
            jobid = getService(lconn).add('scale.noop', n)
            added.wait(30)          # both added, neither committed yet
            if n:
                turn[1].wait(30)
            ltm.commit()            # the second resolves its conflicts
            turn[1].set()
            found[n] = jobid
        except Exception as e:
            found[n] = e
            turn[1].set()
        finally:
            lconn.close()
    threads = [threading.Thread(target=run, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(isinstance(f, int) for f in found), found
    assert partitionOf(found[0]) != partitionOf(found[1])
    conn = db.open(tm)
    with tm:
        service = getService(conn)
        assert sorted(service.jobIds('queued')) == sorted(found)
        for status in ('queued', 'processing', 'completed'):
            index = service._index[status]
            for jobid in found:
                assert index.partitions[spreadPartitionOf(
                    jobid, len(index.partitions))] is not None
            assert len(made(index)) == 2 * SPREAD
        from remotetask.testing import checkConsistency
        assert checkConsistency(service) == []
    conn.close()
    db.close()

"""A ZEO client's stores go to the server in one hand-over to its I/O
thread at the vote (``remotetask.zeobatch``, installed by ``db.openDB``
for ZEO URIs and by the embedded server's clients): the same messages,
in the same order, so what is committed, resolved or aborted is what
ZEO alone does."""
import time

import persistent
import pytest
import transaction
from BTrees.Length import Length
from BTrees.OOBTree import OOBTree
from ZODB.POSException import ConflictError

from remotetask import db as dbmod
from remotetask import zeobatch


class Thing(persistent.Persistent):
    def __init__(self, n):
        self.n = n


def _open(zeo):
    database = dbmod.openDB(zeo.uri)
    assert getattr(database.storage, '_remotetask_batched', False)
    tm = transaction.TransactionManager()
    return database, tm, database.open(tm)


@pytest.fixture
def client(zeo):
    database, tm, conn = _open(zeo)
    yield database, tm, conn
    tm.abort()
    conn.close()
    database.close()


def test_a_commit_hands_its_stores_over_at_once(zeo, client):
    database, tm, conn = client
    loop = database.storage._server.loop
    handed = []
    original = loop.call_soon_threadsafe

    def counting(callback, *args):
        handed.append(callback)
        return original(callback, *args)
    loop.call_soon_threadsafe = counting
    try:
        with tm:
            tree = conn.root()['batched'] = OOBTree()
            for i in range(300):
                tree[i] = Thing(i)
    finally:
        del loop.call_soon_threadsafe
    # 300 objects and the tree's: without batching, a hand-over each.
    assert len(handed) < 20, len(handed)
    # Another client (not batched) reads them all.
    other, tm2, conn2 = _open(zeo)
    try:
        tm2.begin()
        assert [t.n for t in conn2.root()['batched'].values()] == \
            list(range(300))
    finally:
        tm2.abort()
        conn2.close()
        other.close()


def test_conflicts_are_resolved_or_raised_as_without(zeo, client):
    database, tm, conn = client
    with tm:
        conn.root()['count'] = Length()
        conn.root()['thing'] = Thing(0)
    other, tm2, conn2 = _open(zeo)
    try:
        tm.begin()
        tm2.begin()
        conn.root()['count'].change(1)
        conn2.root()['count'].change(2)
        conn.root()['thing'].n = 1
        conn2.root()['thing'].n = 2
        tm.commit()
        with pytest.raises(ConflictError):
            tm2.commit()            # Thing can not merge
        tm2.abort()
        tm2.begin()
        conn2.root()['count'].change(2)     # a Length merges
        tm.begin()
        conn.root()['count'].change(1)
        tm.commit()
        tm2.commit()
        # The other client's commit reaches this one's cache asynchronously.
        deadline = time.monotonic() + 10
        while True:
            tm.begin()
            if conn.root()['count']() == 4 or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        assert conn.root()['count']() == 4 and conn.root()['thing'].n == 1
    finally:
        tm2.abort()
        conn2.close()
        other.close()


class _FailsAtCommit:
    """A data manager that fails after the connection stored its objects
    (its sort key puts it after), before any vote."""

    def __init__(self, tm):
        self.transaction_manager = tm

    def sortKey(self):
        return '~last'

    def tpc_begin(self, txn):
        pass

    def commit(self, txn):
        raise RuntimeError('refused')

    def tpc_abort(self, txn):
        pass

    def abort(self, txn):
        pass


def test_stores_of_an_aborted_commit_are_not_committed(zeo, client):
    database, tm, conn = client
    tm.begin()
    conn.root()['aborted'] = Thing(1)
    tm.get().join(_FailsAtCommit(tm))
    with pytest.raises(RuntimeError, match='refused'):
        tm.commit()
    tm.abort()
    with tm:
        conn.root()['after'] = Thing(2)
    other, tm2, conn2 = _open(zeo)
    try:
        tm2.begin()
        assert 'aborted' not in conn2.root()
        assert conn2.root()['after'].n == 2
    finally:
        tm2.abort()
        conn2.close()
        other.close()


def test_an_unknown_storage_is_left_alone():
    class NotZEO:
        pass
    assert zeobatch.install(NotZEO()) is False


def test_stores_still_pending_leave_before_the_finish():
    # ZEO's tpc_vote re-stores the objects whose conflicts it resolved and
    # votes again, at most 9 rounds; after the last, tpc_finish (which
    # goes to the server directly, not through _call) must still follow
    # those stores, as it did without batching.
    sent = []

    class Loop:
        def call_soon_threadsafe(self, callback, *args):
            sent.append(('stores', [a[0] for a in args[1]]))

    class Client:
        operational = True

    class Server:
        loop = Loop()
        client = Client()

    class Storage:
        _server = Server()

        def _call(self, method, *args, **kw):
            sent.append(method)

        def _async(self, method, *args):
            sent.append(method)

        def _async_iter(self, it):
            sent.append('iter')

        def tpc_finish(self, txn, f=None):
            sent.append('finish')
            return b'tid'

    storage = Storage()
    assert zeobatch.install(storage) is True
    storage._async('storea', b'oid1', b'serial', b'data', 1)
    storage._async('storea', b'oid2', b'serial', b'data', 1)
    assert sent == []
    assert storage.tpc_finish('txn') == b'tid'
    assert sent == [('stores', [b'oid1', b'oid2']), 'finish']
    storage.tpc_finish('txn')           # nothing pending: no hand-over
    assert sent[-2:] == ['finish', 'finish']

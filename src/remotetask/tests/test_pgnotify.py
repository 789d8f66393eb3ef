"""RelStorage on PostgreSQL: idle workers are woken by LISTEN/NOTIFY
(remotetask.pgnotify), with the local PostgreSQL server."""
import threading
import time

import pytest
import transaction
import zope.component
from ZODB.MappingStorage import MappingStorage
import ZODB

from remotetask import db as dbmod
from remotetask import pgnotify
from remotetask.task import SimpleTask

pytestmark = pytest.mark.postgres


def waitUntil(predicate, what, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError('timed out waiting for ' + what)
        time.sleep(0.02)


def spyLooks(processor):
    """A list to which each of ``processor``'s looks at its service (its
    ``_service``) appends the time (``time.monotonic()``)."""
    looks = []
    original = processor._service

    def spy(conn):
        looks.append(time.monotonic())
        return original(conn)
    processor._service = spy
    return looks


@pytest.fixture
def rdb(postgres):
    database = dbmod.openDB(postgres.uri + '?keep_history=false')
    dbmod.ensureService(database)
    yield database
    database.close()


@pytest.fixture
def echo():
    zope.component.provideUtility(SimpleTask(lambda input: input),
                                  name='echo')


def add(database, count=1, commit=True):
    tm = transaction.TransactionManager()
    conn = database.open(tm)
    try:
        tm.begin()
        service = dbmod.getService(conn)
        ids = [service.add('echo', i) for i in range(count)]
        if commit:
            tm.commit()
        else:
            tm.abort()
        return ids
    finally:
        conn.close()


class Heard:
    def __init__(self):
        self.payloads = []
        self.event = threading.Event()

    def __call__(self, payload):
        self.payloads.append(payload)
        self.event.set()


def test_only_postgres_databases_notify():
    database = ZODB.DB(MappingStorage())
    try:
        assert pgnotify.dsnOf(database) is None
        assert pgnotify.listen(database, lambda payload: None) is None
    finally:
        database.close()


def test_dsn_of_relstorage(rdb):
    dsn = pgnotify.dsnOf(rdb)
    assert 'dbname=' in dsn and 'host=' in dsn


def test_an_add_notifies_once_per_transaction_after_commit(rdb, echo):
    heard = Heard()
    listener = pgnotify.listen(rdb, heard)
    try:
        assert listener.connected.wait(30), 'LISTEN connection'
        before = pgnotify.sender.sent
        add(rdb, 3)
        assert heard.event.wait(30), 'no NOTIFY arrived'
        assert heard.payloads == [dbmod.DEFAULT_SERVICE]
        assert pgnotify.sender.sent == before + 1
        # An aborted add sends nothing.
        add(rdb, 1, commit=False)
        assert pgnotify.sender.sent == before + 1
    finally:
        pgnotify.unlisten(rdb, heard)
    assert not listener.is_alive()


def test_the_notify_comes_once_the_job_can_be_read(rdb, echo):
    """The NOTIFY is sent in the commit's second phase, right after the
    service's connection committed (before ZODB's post-commit poll): a
    listener that reads the job at once finds it; a (non-optimistic)
    savepoint in the adding transaction works."""
    seen = []
    done = threading.Event()

    def read(payload):
        tm = transaction.TransactionManager()
        conn = rdb.open(tm)
        try:
            tm.begin()
            seen.append(sorted(dbmod.getService(conn).jobs.keys()))
        finally:
            tm.abort()
            conn.close()
        done.set()
    listener = pgnotify.listen(rdb, read)
    try:
        assert listener.connected.wait(30), 'LISTEN connection'
        tm = transaction.TransactionManager()
        conn = rdb.open(tm)
        try:
            tm.begin()
            jobid = dbmod.getService(conn).add('echo', 1)
            tm.savepoint()
            tm.commit()
        finally:
            conn.close()
        assert done.wait(30), 'no NOTIFY arrived'
        assert seen == [[jobid]]
    finally:
        pgnotify.unlisten(rdb, read)


def test_idle_processor_is_woken_by_notify(rdb, echo):
    from remotetask.interfaces import COMPLETED
    from remotetask.processor import Processor
    processor = Processor(rdb, poll_interval=3600.0, lease=60.0)
    heard = Heard()
    original = processor._onNotify

    def spy(payload):
        heard(payload)
        original(payload)
    processor._onNotify = spy
    processor.start()
    try:
        listener = pgnotify._listeners[pgnotify.dsnOf(rdb)]
        assert listener.connected.wait(30), 'LISTEN connection'
        jobid, = add(rdb)
        assert heard.event.wait(30), 'the processor heard no NOTIFY'
        assert dbmod.DEFAULT_SERVICE in heard.payloads

        def completed():
            tm = transaction.TransactionManager()
            conn = rdb.open(tm)
            try:
                return dbmod.getService(conn).jobs[jobid].status == COMPLETED
            finally:
                tm.abort()
                conn.close()
        waitUntil(completed, 'the job to complete')
    finally:
        processor.stop(10)
    assert pgnotify.dsnOf(rdb) not in pgnotify._listeners


def test_listener_calls_back_after_reconnecting(rdb):
    """A lost LISTEN connection is opened again, and the callbacks are
    called once (payload None) since a NOTIFY may have been missed."""
    import psycopg2
    heard = Heard()
    listener = pgnotify.listen(rdb, heard)
    try:
        assert listener.connected.wait(30)
        conn = psycopg2.connect(pgnotify.dsnOf(rdb))
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM "
                        "pg_stat_activity WHERE query = 'LISTEN %s' AND "
                        "datname = current_database()" % pgnotify.CHANNEL)
        conn.close()
        assert heard.event.wait(60), 'no call after reconnecting'
        assert heard.payloads == [None]
        assert listener.connected.wait(30)
    finally:
        pgnotify.unlisten(rdb, heard)


def test_idle_processor_does_not_poll_while_listening(rdb, echo):
    """With the LISTEN connection up, an idle processor's threads and
    clock do not look at the queue at every poll interval and tick: the
    NOTIFY of an add wakes them."""
    from remotetask.processor import Processor
    processor = Processor(rdb, poll_interval=0.05, lease=60.0,
                          maintenance_interval=3600.0, heartbeat=3600.0)
    looks = spyLooks(processor)
    processor.start()
    try:
        listener = pgnotify._listeners[pgnotify.dsnOf(rdb)]
        assert listener.connected.wait(30), 'LISTEN connection'
        time.sleep(0.5)         # start-up looks, registry entry
        before = len(looks)
        time.sleep(2.0)
        # Polling every 0.05 s (threads) and every tick (clock) would look
        # about 80 times in 2 s.
        assert len(looks) - before <= 2
        jobid, = add(rdb)
        waitUntil(lambda: processor.stats['completed'] == 1,
                  'the job to complete')
    finally:
        processor.stop(10)


def test_a_delayed_job_starts_on_time_while_listening(rdb, echo,
                                                      monkeypatch):
    """Quiet does not mean late: the clock looks again when the earliest
    waiting job is due, not only after QUIET_POLL."""
    from remotetask.processor import Processor
    monkeypatch.setattr(pgnotify, 'QUIET_POLL', 3600.0)
    processor = Processor(rdb, poll_interval=3600.0, lease=60.0)
    processor.start()
    try:
        listener = pgnotify._listeners[pgnotify.dsnOf(rdb)]
        assert listener.connected.wait(30), 'LISTEN connection'
        tm = transaction.TransactionManager()
        conn = rdb.open(tm)
        try:
            with tm:
                dbmod.getService(conn).add('echo', 1, delay=1.0)
        finally:
            conn.close()
        waitUntil(lambda: processor.stats['completed'] == 1,
                  'the delayed job to complete', timeout=30)
    finally:
        processor.stop(10)

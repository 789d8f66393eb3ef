"""Storages by URI, the PostgreSQL fixtures, and retrying transactions."""
import os

import pytest
import transaction
from ZODB.POSException import ConflictError

from remotetask import db as dbmod
from remotetask import testing
from remotetask.interfaces import StorageUnavailable
from remotetask.retry import attempts, unavailable


def _roundtrip(uri):
    """Store a value through one DB, read it back through a second."""
    database = dbmod.openDB(uri)
    try:
        tm = transaction.TransactionManager()
        conn = database.open(tm)
        with tm:
            conn.root()['probe'] = 42
        conn.close()
    finally:
        database.close()
    if uri.startswith('memory://'):
        return 42
    database = dbmod.openDB(uri)
    try:
        conn = database.open()
        try:
            return conn.root()['probe']
        finally:
            conn.close()
    finally:
        database.close()


def test_file_uri_and_plain_path(tmp_path):
    path = str(tmp_path / 'sub' / 'Data.fs')
    assert _roundtrip('file://' + path) == 42
    assert dbmod.normalizeURI(path) == 'file://' + path
    assert os.path.exists(path)


def test_memory_uri():
    assert _roundtrip('memory://') == 42


@pytest.mark.zeo
def test_zeo_uri(tmp_path):
    with testing.ZEOServer(str(tmp_path / 'zeo.fs')) as server:
        assert server.uri.startswith('zeo://127.0.0.1:')
        assert _roundtrip(server.uri) == 42


def test_postgres_uri_normalized():
    norm = dbmod.normalizeURI
    assert norm('postgres://bob:pw@db.example:6000/jobs?keep_history=false') \
        == 'postgres://bob:pw@db.example:6000/jobs?keep_history=false'
    assert norm('postgresql://bob@db.example/jobs') \
        == 'postgres://bob@db.example:5432/jobs'
    with pytest.raises(dbmod.ConfigurationError, match='no database name'):
        norm('postgres://bob@db.example:5432/')
    with pytest.raises(dbmod.ConfigurationError, match='nosuch'):
        dbmod.openDB('nosuch://x')


@pytest.mark.postgres
def test_postgres_uri(postgres):
    assert postgres.uri.startswith('postgres://postgres@127.0.0.1:5432/')
    assert _roundtrip(postgres.uri) == 42
    # Options go to RelStorage.
    assert _roundtrip(postgres.uri + '?cache_local_mb=10') == 42


@pytest.mark.postgres
def test_postgres_database_is_dropped():
    reason = testing.postgresAvailable()
    if reason:
        pytest.skip(reason)
    database = testing.PostgresDatabase().create()
    database.drop()
    with pytest.raises(Exception, match='does not exist'):
        _roundtrip(database.uri)


@pytest.mark.postgres
@pytest.mark.slow
def test_throwaway_cluster_restarts(tmp_path):
    # A setting replaced, the others (a test cluster's) kept.
    with testing.ThrowawayPostgres(settings={'max_connections': '20'}) \
            as cluster:
        assert testing.postgresAvailable(port=cluster.port) is None
        conn = testing._pgConnect(port=cluster.port)
        try:
            cur = conn.cursor()
            cur.execute('SHOW max_connections')
            assert cur.fetchone()[0] == '20'
            cur.execute('SHOW fsync')
            assert cur.fetchone()[0] == 'off'
        finally:
            conn.close()
        with cluster.database() as database:
            assert _roundtrip(database.uri) == 42
            cluster.stop()
            assert testing.postgresAvailable(port=cluster.port)
            cluster.start()
            database2 = dbmod.openDB(database.uri)
            try:
                assert database2.open().root()['probe'] == 42
            finally:
                database2.close()
    assert not os.path.exists(cluster.dir)


# -- retry.attempts ------------------------------------------------------------

def test_attempts_retries_conflicts_and_counts_them():
    tm = transaction.TransactionManager()
    stats = {}
    calls = []
    for attempt in attempts(tm, conflicts=5, stats=stats):
        with attempt:
            calls.append(1)
            if len(calls) < 3:
                raise ConflictError('simulated')
    assert len(calls) == 3
    assert stats == {"transactions": 1, "commits": 1, "conflicts": 2,
                     "conflicts_by_class": {"ConflictError": 2}}


def test_attempts_gives_up_after_conflicts():
    tm = transaction.TransactionManager()
    calls = []
    with pytest.raises(ConflictError):
        for attempt in attempts(tm, conflicts=3):
            with attempt:
                calls.append(1)
                raise ConflictError('always')
    assert len(calls) == 3


def test_attempts_does_not_retry_other_errors():
    tm = transaction.TransactionManager()
    calls = []
    with pytest.raises(ZeroDivisionError):
        for attempt in attempts(tm):
            with attempt:
                calls.append(1)
                1 / 0
    assert calls == [1]


def test_attempts_waits_out_an_outage_then_gives_up():
    from ZEO.Exceptions import ClientDisconnected
    assert unavailable(ClientDisconnected('x'))
    assert not unavailable(ConflictError('x'))
    tm = transaction.TransactionManager()
    stats = {}
    calls = []
    for attempt in attempts(tm, outage=30, stats=stats, pause=0.01):
        with attempt:
            calls.append(1)
            if len(calls) < 4:
                raise ClientDisconnected('down')
    assert stats['outages'] == 3 and stats['commits'] == 1
    with pytest.raises(StorageUnavailable, match='could not be reached'):
        for attempt in attempts(tm, outage=0.05, pause=0.01):
            with attempt:
                raise ClientDisconnected('down for good')


def test_the_drivers_errors_are_outages_once_it_is_imported():
    # retry does not import psycopg2 (start-up time); RelStorage does,
    # and from then on its connection errors are outages to wait out.
    psycopg2 = pytest.importorskip('psycopg2')
    from remotetask.threads import storageErrors
    assert unavailable(psycopg2.OperationalError('server closed'))
    assert unavailable(psycopg2.InterfaceError('connection already closed'))
    assert not unavailable(psycopg2.ProgrammingError('syntax'))
    wrapped = RuntimeError('while polling')
    wrapped.__cause__ = psycopg2.OperationalError('server closed')
    assert unavailable(wrapped)
    assert issubclass(psycopg2.OperationalError, storageErrors())

"""Quiet idle processors on RelStorage with LISTEN/NOTIFY (remotetask.quiet),
with the local PostgreSQL server: one look now and then, which still
reaps, beats and finds the jobs whose NOTIFY was lost."""
import time

import pytest
import transaction
import zope.component

from remotetask import db as dbmod
from remotetask import pgnotify, quiet, registry
from remotetask.interfaces import COMPLETED
from remotetask.processor import Processor
from remotetask.task import SimpleTask
from remotetask.tests.test_pgnotify import (  # noqa
    add, echo, rdb, spyLooks, waitUntil)

pytestmark = pytest.mark.postgres


@pytest.fixture
def fast(monkeypatch):
    """Looks every 0.3 s, idle heartbeats every 0.6 s."""
    monkeypatch.setattr(pgnotify, 'QUIET_POLL', 0.3)
    monkeypatch.setattr(quiet, 'IDLE_HEARTBEAT', 0.6)


def started(database, **kw):
    options = dict(poll_interval=0.05, lease=60.0, maintenance_interval=0.05,
                   heartbeat=0.05)
    options.update(kw)
    processor = Processor(database, **options)
    processor.start()
    listener = pgnotify._listeners[pgnotify.dsnOf(database)]
    assert listener.connected.wait(30), 'LISTEN connection'
    return processor


def read(database, func):
    tm = transaction.TransactionManager()
    conn = database.open(tm)
    try:
        tm.begin()
        return func(dbmod.getService(conn))
    finally:
        tm.abort()
        conn.close()


def test_an_idle_processor_looks_once_per_quiet_poll(rdb, echo, fast):
    """Maintenance, heartbeat and the look at the queue (every tick of
    0.05 s without LISTEN) share one transaction per QUIET_POLL; the
    registry entry records the idle heartbeat's interval, and stays
    alive."""
    processor = started(rdb)
    looks = spyLooks(processor)
    try:
        waitUntil(lambda: quiet.isQuiet(processor), 'the processor idles')
        runs = processor.stats['maintenance_runs']
        time.sleep(3.0)
        # At the usual pace: a heartbeat, a maintenance and a look at
        # every 0.05 s tick, about 180 transactions in 3 s; quiet: 10.
        assert 3 <= len(looks) <= 20
        assert processor.stats['maintenance_runs'] - runs >= 3
        entries = read(rdb, lambda s: [
            (e.interval, e.alive()) for e in registry.entries(s)])
        assert entries == [(0.6, True)]
        # Busy again: the usual heartbeat interval comes back.
        zope.component.provideUtility(
            SimpleTask(lambda input: time.sleep(input)), name='nap')
        tm = transaction.TransactionManager()
        conn = rdb.open(tm)
        try:
            with tm:
                dbmod.getService(conn).add('nap', 2.0)
        finally:
            conn.close()
        waitUntil(lambda: read(rdb, lambda s: [
            (e.interval, len(e.running)) for e in registry.entries(s)])
            == [(0.05, 1)], 'a heartbeat at the usual interval')
        waitUntil(lambda: processor.stats['completed'] == 1, 'the job')
    finally:
        processor.stop(10)


def test_a_quiet_processor_reaps_a_dead_workers_job(rdb, echo, fast):
    """A job claimed by a worker that died (no commit, no NOTIFY tells of
    its lease's end) is reaped by the idle processor's look, and run."""
    tm = transaction.TransactionManager()
    conn = rdb.open(tm)
    try:
        with tm:
            service = dbmod.getService(conn)
            jobid = service.add('echo', 'x')
        with tm:
            # A claim writes no NOTIFY; the claimer then "dies".
            claimed = dbmod.getService(conn).claim(worker='dead:1/1',
                                                   lease=5.0)
            assert [job.id for job in claimed] == [jobid]
    finally:
        conn.close()
    processor = started(rdb)
    try:
        waitUntil(lambda: quiet.isQuiet(processor), 'the processor idles')
        assert processor.stats['reaped'] == 0       # the lease holds yet
        waitUntil(lambda: read(rdb, lambda s: s.jobs[jobid].status)
                  == COMPLETED, 'the reaped job to run', timeout=30)
        assert processor.stats['reaped'] == 1
    finally:
        processor.stop(10)


def test_a_job_whose_notify_was_lost_runs_within_quiet_poll(
        rdb, echo, fast, monkeypatch):
    """The threads wait without a timeout; the clock's look finds a job
    no NOTIFY announced, and wakes them."""
    processor = started(rdb)
    try:
        waitUntil(lambda: quiet.isQuiet(processor), 'the processor idles')
        sent = pgnotify.sender.sent
        monkeypatch.setattr(pgnotify._Notifier, 'tpc_finish',
                            lambda self, txn: None)
        jobid, = add(rdb)
        waitUntil(lambda: processor.stats['completed'] == 1,
                  'the job to run', timeout=30)
        assert pgnotify.sender.sent == sent      # no NOTIFY was sent
        assert read(rdb, lambda s: s.jobs[jobid].status) == COMPLETED
    finally:
        processor.stop(10)


def test_an_idle_processor_holds_no_open_transaction(postgres, echo, fast):
    """No connection of an idle processor stays inside a PostgreSQL
    transaction (RelStorage's poll after a commit would open one, holding
    its snapshot, and VACUUM's horizon, until the next transaction)."""
    from remotetask import testing
    uri = postgres.uri + '?keep_history=false'
    producer = dbmod.openDB(uri)
    dbmod.ensureService(producer)
    database = dbmod.openDB(uri)
    processor = started(database)
    try:
        waitUntil(lambda: quiet.isQuiet(processor), 'the processor idles')
        add(producer)
        producer.close()
        waitUntil(lambda: processor.stats['completed'] == 1, 'the job')
        waitUntil(lambda: quiet.isQuiet(processor), 'the processor idles')
        time.sleep(1.0)     # a few looks
        conn = testing._pgConnect()
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT state, query FROM pg_stat_activity WHERE "
                    "datname = %s AND pid <> pg_backend_pid()",
                    (postgres.name,))
                states = cur.fetchall()
        finally:
            conn.close()
        assert len(states) >= 3         # a thread's, the clock's, LISTEN
        assert [s for s in states if s[0] != 'idle'] == []
    finally:
        processor.stop(10)
        database.close()

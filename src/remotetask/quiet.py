"""Quiet idle processors on RelStorage with LISTEN/NOTIFY.

A processor whose LISTEN connection stands (``remotetask.pgnotify``) is
told of every job made to wait, so while it has nothing to do it need not
ask the database anything at short intervals.  What it still must do while
idle, and how often (docs/design.md, "Idle workers on RelStorage"):

- look at the queue, in case a NOTIFY was lost (a producer that died
  between its commit and its NOTIFY): every ``pgnotify.QUIET_POLL``
  seconds, and when a waiting job's time comes (``routing.firstEta``);
- reap the jobs of workers that died (their leases expire by time, with no
  commit to say so), run the maintenance hooks and remove expired jobs:
  every ``max(maintenance_interval, QUIET_POLL)`` seconds;
- beat in the worker registry: every ``IDLE_HEARTBEAT`` seconds, the entry
  recording that interval, so that it expires ``registry.MISSED`` of them
  after the last beat (other processors count it alive that long).

``look`` does all of these that are due in ONE transaction, read-only
unless a heartbeat, a reaping or an expiry writes: an idle worker costs one
short read transaction per ``QUIET_POLL`` and one write per
``IDLE_HEARTBEAT``.  Its worker threads wait without a timeout (a NOTIFY
wakes them, or ``look`` when it finds a job due), and no connection of it
stays inside a PostgreSQL transaction while idle (``afterCommitUnsynced``
and the clock's explicit transaction manager): RelStorage's implicit
post-commit poll would otherwise open one that holds its snapshot (and
VACUUM's horizon) until the next transaction.

A processor is quiet (``isQuiet``) while its LISTEN connection stands, it
holds no claimed job, one of its threads waits for work, it is not
stopping and retention is not behind.  Any job, a lost LISTEN connection
or a stop brings the clock's usual pace back at once (``remotetask.clock``).
"""
import logging
import time
from contextlib import contextmanager

from transaction.interfaces import TransientError

from remotetask import pgnotify, registry, retention, routing
from remotetask.threads import storageErrors

log = logging.getLogger('remotetask.worker')

#: Seconds between the registry heartbeats of a quiet idle processor (its
#: entry expires ``registry.MISSED`` times this after the last one).
IDLE_HEARTBEAT = 30.0


def isQuiet(processor):
    """True while ``processor`` may keep quiet (see above)."""
    return (pgnotify.quiet(processor._listener)
            and processor._idle > 0
            and not processor._active
            and not processor._expireBehind
            and not processor._stopping.is_set())


def maintenanceInterval(processor):
    """Seconds between maintenance runs of a quiet processor."""
    return max(processor.maintenance_interval, pgnotify.QUIET_POLL)


def look(processor, tm, conn, now, nextMaintenance):
    """The quiet processor's periodic work that is due at ``now``, in one
    transaction (see above); returns when maintenance is due next."""
    p = processor
    listener = p._listener
    heard = listener.heard
    maintain = now >= nextMaintenance
    registration = p.registration
    beat = registration.due(now, idle=True)
    due = heard != p._dueHeard or now >= p._dueNext
    if not (maintain or beat or due):
        return nextMaintenance
    key = registration.key
    cursors = p._expiryCursors or {}
    limit = p._expireBatch
    try:
        for attempt in tm.attempts(3):
            with attempt:
                service = p._service(conn)
                reaped, expired, more, dead = [], None, False, []
                if maintain:
                    reaped = service.maintain(now)
                    p._expiring = registry.first(service, key, now)
                    if p._expiring:
                        expired, after, more = retention.expire(
                            service, now, cursors, limit=limit,
                            scan=limit * retention.SCAN_FACTOR)
                if beat:
                    registration.beat(service, now, max(
                        IDLE_HEARTBEAT, registration.interval))
                    if registration.pruneDue(now):
                        dead = registry.prune(service, now)
                waiting = service.hasJobsWaiting()
                first = routing.firstEta(service)
    except storageErrors():
        raise
    except TransientError:
        log.warning('clock: the idle look conflicted; next tick')
        return nextMaintenance
    if maintain:
        nextMaintenance = now + maintenanceInterval(p)
        p._count(maintenance_runs=1, reaped=len(reaped))
        if expired is not None:
            p._expiryCursors = after
            p._expireBehind = more
            p._expireEnded = time.monotonic()
            if expired:
                p._count(expired=len(expired))
    p._dueHeard = heard
    p._dueNext = now + pgnotify.QUIET_POLL
    if first is not None:
        p._dueNext = min(p._dueNext, first)
    if reaped:
        log.warning('reaped jobs %s (lease expired or time limit)',
                    ', '.join(map(str, reaped)))
    if dead:
        log.warning('workers %s expired (no heartbeat for %d intervals)',
                    ', '.join(dead), registry.MISSED)
    if waiting or reaped:
        p.wake()
    return nextMaintenance


@contextmanager
def afterCommitUnsynced(conn):
    """Within: ``conn`` (a ZODB connection of an implicit transaction
    manager) does not begin a new snapshot when a transaction ends; the
    next ``begin()`` does.  ZODB's ``Connection.afterCompletion`` calls
    ``newTransaction`` for applications that go on without ``begin()``: on
    RelStorage that is a poll of the database, which opens a PostgreSQL
    transaction, one round trip after each commit; a worker thread begins
    its next transaction (the run of what it claimed, or its next claim)
    itself.  Only around code of remotetask's own, never a task's."""
    previous = conn.explicit_transactions
    conn.explicit_transactions = True
    try:
        yield
    finally:
        conn.explicit_transactions = previous

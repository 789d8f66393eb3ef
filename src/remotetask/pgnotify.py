"""Waking workers on RelStorage with PostgreSQL's LISTEN/NOTIFY.

RelStorage has no invalidation push: a connection learns of other
processes' commits only when it polls.  So that idle workers need not poll
to see new jobs:

- when a transaction makes a job wait (``TaskService._enter`` of a waiting
  status: an add, a retry, a hand-back, a released workflow step) in a
  database on RelStorage with PostgreSQL, ``jobWaiting`` joins one
  resource to that transaction (``_Notifier``) which sends
  ``NOTIFY remotetask_jobs, '<service name>'`` (``pg_notify``) in the
  second phase of the commit, right after the service's connection has
  committed (never before its jobs can be seen, and without waiting for
  ZODB's post-commit poll of that connection), on one autocommit
  connection per process;
- each processor on such a database ``listen``s: one thread per database
  and process holds a connection that ``LISTEN``s on the channel and
  blocks on its socket (``select``), and calls the processors' callbacks
  with the payload when a notification arrives: they wake their idle
  threads at once.

While its LISTEN connection stands, an idle processor does not poll:

- its idle threads wait until woken, rather than ``poll_interval``;
- its clock looks at the queue (``remotetask.quiet``, or
  ``Clock._checkDue`` while it has jobs) only after a notification
  (``Listener.heard`` moved), when the earliest waiting job's time has come
  (``routing.firstEta``, over every lane, paused or not), or
  ``QUIET_POLL`` seconds after it last looked; it wakes the threads when a
  job is due.

Every change that puts a job in a queue goes through ``_enter`` and so
sends a NOTIFY; what else lets a worker take a job (a delayed job's time,
a freed concurrency slot, a resumed queue) concerns a job already waiting,
which keeps the clock looking at every tick as before.  So a lost
notification (a producer that died between its commit and the NOTIFY, a
connection that died silently) costs at most ``QUIET_POLL``.  A listener
that reconnects calls its callbacks once (with ``None``) so nothing sent
meanwhile waits longer; while it is not connected, processors poll every
``poll_interval`` as on other storages.  Other storages are not
touched: the check is one attribute lookup per add.  The connections use
psycopg2 (RelStorage's default PostgreSQL driver); without it, processors
poll as before and one line says so.
"""
import logging
import os
import select
import threading

log = logging.getLogger('remotetask.pgnotify')

CHANNEL = 'remotetask_jobs'

#: Seconds an idle processor goes without looking at the queue while its
#: LISTEN connection stands (see above).
QUIET_POLL = 10.0

_NO = ''        # cached "not PostgreSQL" (the DSN otherwise)
_KEY = object()     # the transaction's data key of the pending NOTIFY


def dsnOf(db):
    """The libpq DSN of ``db``'s RelStorage on PostgreSQL, or None
    (cached on the database object)."""
    dsn = db.__dict__.get('_remotetask_pgdsn')
    if dsn is None:
        dsn = _NO
        adapter = getattr(db.storage, '_adapter', None)
        if adapter is not None and type(adapter).__module__.startswith(
                'relstorage.adapters.postgresql'):
            dsn = getattr(adapter, '_dsn', None) or _NO
        db._remotetask_pgdsn = dsn
    return dsn or None


# -- sending --------------------------------------------------------------------

class _Sender:
    """One autocommit connection per process and DSN for the NOTIFYs."""

    def __init__(self):
        self._lock = threading.Lock()
        self._conns = {}
        self.sent = 0
        self.failed = 0

    def send(self, dsn, payloads):
        with self._lock:
            try:
                conn = self._conns.get(dsn)
                if conn is None or conn.closed:
                    conn = self._conns[dsn] = _connect(dsn)
                with conn.cursor() as cur:
                    for payload in payloads:
                        cur.execute('SELECT pg_notify(%s, %s)',
                                    (CHANNEL, payload))
                self.sent += len(payloads)
            except Exception as e:
                self.failed += 1
                log.debug('NOTIFY failed (workers find the jobs at their '
                          'next poll): %s', e)
                conn = self._conns.pop(dsn, None)
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:
                        pass

    def close(self):
        with self._lock:
            for conn in self._conns.values():
                try:
                    conn.close()
                except Exception:
                    pass
            self._conns.clear()


sender = _Sender()


def _connect(dsn):
    import psycopg2
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    return conn


def jobWaiting(service):
    """A job of ``service`` waits from the current transaction on: once
    it commits, notify the listeners (RelStorage on PostgreSQL only)."""
    jar = service._p_jar
    if jar is None:
        return
    dsn = dsnOf(jar.db())
    if dsn is None:
        return
    txn = jar.transaction_manager.get()
    try:
        notifier = txn.data(_KEY)
    except KeyError:
        notifier = _Notifier(dsn, jar.sortKey())
        txn.set_data(_KEY, notifier)
        txn.join(notifier)
    notifier.names.add(service.__name__ or '')


class _Notifier:
    """Sends the NOTIFY of a transaction that made jobs wait, as a
    resource of it whose second phase comes right after the service's
    connection's (its sort key follows the connection's): once the
    storage has committed, before ZODB's post-commit work on that
    connection (on RelStorage, a poll of the database, which an
    after-commit hook would wait for: a round trip on every add's way to
    the workers).  Nothing is sent if the transaction aborts.  A
    savepoint's rollback keeps it (a NOTIFY too many wakes workers that
    find nothing: harmless)."""

    transaction_manager = None

    def __init__(self, dsn, after):
        self.dsn = dsn
        self.names = set()
        self._key = after + ' ~remotetask.pgnotify'

    def sortKey(self):
        return self._key

    def tpc_finish(self, txn):
        try:
            sender.send(self.dsn, sorted(self.names))
        except Exception:       # never fail a committed transaction
            log.debug('NOTIFY failed', exc_info=True)

    def savepoint(self):
        return _NoRollback()

    def abort(self, txn):
        pass

    tpc_begin = commit = tpc_vote = tpc_abort = abort


class _NoRollback:
    def rollback(self):
        pass


# -- listening ------------------------------------------------------------------

class Listener(threading.Thread):
    """LISTENs on ``CHANNEL`` and calls the callbacks with each payload."""

    def __init__(self, dsn):
        super().__init__(daemon=True, name='remotetask LISTEN')
        self.dsn = dsn
        self.callbacks = []
        self.connected = threading.Event()
        #: Moves at each notification and each (re)connection: a reader
        #: that saw the same value has missed nothing since.
        self.heard = 0
        self._halt = threading.Event()
        self._r, self._w = os.pipe()

    def stop(self):
        self._halt.set()
        os.write(self._w, b'x')
        self.join(10)
        os.close(self._r)
        os.close(self._w)

    def _call(self, payload):
        for callback in list(self.callbacks):
            try:
                callback(payload)
            except Exception:
                log.exception('LISTEN callback failed')

    def run(self):
        failures = 0
        while not self._halt.is_set():
            conn = None
            try:
                conn = _connect(self.dsn)
                with conn.cursor() as cur:
                    cur.execute('LISTEN ' + CHANNEL)
                self.heard += 1
                self.connected.set()
                if failures:
                    log.info('LISTEN connection back')
                    self._call(None)    # whatever was sent meanwhile
                failures = 0
                while not self._halt.is_set():
                    ready, _, _ = select.select([conn, self._r], [], [], 60)
                    if self._r in ready:
                        break
                    conn.poll()
                    payloads = set()
                    while conn.notifies:
                        payloads.add(conn.notifies.pop(0).payload)
                    if payloads:
                        self.heard += 1
                    for payload in sorted(payloads):
                        self._call(payload)
            except Exception as e:
                self.connected.clear()
                failures += 1
                if failures == 1:
                    log.warning('LISTEN connection lost (%s); workers poll '
                                'until it is back', e)
                self._halt.wait(min(5.0, 0.2 * 2 ** min(failures, 5)))
            finally:
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:
                        pass


_lock = threading.Lock()
_listeners = {}     # dsn -> Listener


def quiet(listener):
    """True while ``listener`` (a Listener or None) stands: its owner may
    rely on notifications rather than polling (see above)."""
    return listener is not None and listener.connected.is_set()


def listen(db, callback):
    """Call ``callback(payload)`` whenever a job is made to wait in a
    service of ``db`` (payload: the service's name; None after a lost
    connection).  Returns the Listener, or None if ``db`` is not on
    PostgreSQL or psycopg2 is missing."""
    dsn = dsnOf(db)
    if dsn is None:
        return None
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        log.warning('psycopg2 is not installed: idle workers on this '
                    'database poll instead of LISTENing')
        return None
    with _lock:
        listener = _listeners.get(dsn)
        if listener is None or not listener.is_alive():
            listener = _listeners[dsn] = Listener(dsn)
            listener.start()
        listener.callbacks.append(callback)
    return listener


def unlisten(db, callback):
    dsn = dsnOf(db)
    if dsn is None:
        return
    with _lock:
        listener = _listeners.get(dsn)
        if listener is None:
            return
        if callback in listener.callbacks:
            listener.callbacks.remove(callback)
        if listener.callbacks:
            return
        del _listeners[dsn]
    listener.stop()

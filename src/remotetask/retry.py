"""Transactions that ride out conflicts and storage outages.

``tm.attempts(n)`` retries a transaction ``n`` times on a ``TransientError``
(a ``ConflictError``, ZEO's ``ClientDisconnected``), at once.  That is right
for conflicts, not for a ZEO server or a PostgreSQL server that is down for
a few seconds: ``n`` immediate retries are spent in milliseconds, and
RelStorage reports a server that went away as the database driver's
``OperationalError``/``InterfaceError``, which is not transient at all.

``attempts(tm)`` is a drop-in for ``tm.attempts()``::

    for attempt in attempts(tm, stats=stats):
        with attempt:
            service.add('echo', 'hi')

It retries conflicts (``TransientError`` other than an outage) up to
``conflicts`` times at once, and waits out an outage (``unavailable(exc)``)
with growing pauses for up to ``outage`` seconds, then raises
``StorageUnavailable``.  ``stats`` (a dict, optional) counts
``transactions``, ``commits``, ``conflicts`` and ``outages`` (retries of
each kind), for reporting retry rates, and ``conflicts_by_class`` (the class
of the object each conflict was about).

A commit that fails in its second phase because the server went away may
or may not have been stored: the retry can then do the work twice (an
``add()`` adds a second job).  Nothing is lost; see docs/design.md.
"""
import logging
import sys
import time

from transaction.interfaces import TransientError
from ZEO.Exceptions import ClientDisconnected

from remotetask.interfaces import StorageUnavailable

log = logging.getLogger('remotetask.retry')


def disconnectErrors():
    """The exception classes that say the database server can not be
    reached: ZEO's ``ClientDisconnected``, ``StorageUnavailable`` and, once
    the PostgreSQL driver is imported, its ``OperationalError`` and
    ``InterfaceError``.

    The driver is not imported here (that costs 25-75 ms at every start):
    only RelStorage raises its errors, and RelStorage imports it before it
    connects, so a process where it is not imported has none to catch."""
    driver = sys.modules.get('psycopg2')
    errors = _ERRORS.get(driver)
    if errors is None:
        errors = (ClientDisconnected, StorageUnavailable)
        if driver is not None:
            try:
                errors += (driver.OperationalError, driver.InterfaceError)
            except AttributeError:  # pragma: no cover - still importing
                return errors
        _ERRORS.clear()
        _ERRORS[driver] = errors
    return errors


#: The last ``disconnectErrors()`` by driver module (or None).
_ERRORS = {}


def unavailable(exc):
    """True if ``exc`` says the database server can not be reached (ZEO's
    ``ClientDisconnected``, a PostgreSQL driver's connection errors as
    RelStorage passes them on, ``StorageUnavailable``)."""
    errors = disconnectErrors()
    if isinstance(exc, errors):
        return True
    cause = exc.__cause__ or exc.__context__
    return cause is not None and cause is not exc and isinstance(
        cause, errors)


def _count(stats, key):
    if stats is not None:
        stats[key] = stats.get(key, 0) + 1


class _Attempt:
    def __init__(self, run):
        self.run = run

    def __enter__(self):
        return self.run.tm.get()

    def __exit__(self, etype, exc, tb):
        tm = self.run.tm
        if etype is None:
            try:
                tm.commit()
            except BaseException:
                exc = sys.exc_info()[1]
                _abort(tm)
                return self.run.failed(exc)
            self.run.done = True
            _count(self.run.stats, 'commits')
            return False
        _abort(tm)
        return self.run.failed(exc)


def _abort(tm):
    try:
        tm.abort()
    except Exception as e:
        # An abort that can not reach the server: the next attempt starts
        # afresh anyway.
        log.debug('abort failed: %s: %s', type(e).__name__, e)


class _Run:
    def __init__(self, tm, conflicts, outage, stats, pause, maxpause):
        self.tm = tm
        self.conflicts = conflicts
        self.outage = outage
        self.stats = stats
        self.pause = pause
        self.maxpause = maxpause
        self.done = False
        self.tries = 0
        self.down_since = None

    def failed(self, exc):
        """Called with the exception of a failed attempt: True to retry
        (swallow it), False to let it propagate."""
        if isinstance(exc, BaseException) and not isinstance(exc, Exception):
            return False
        conflict = isinstance(exc, TransientError) and not isinstance(
            exc, disconnectErrors())
        if not conflict and unavailable(exc):
            # (A RelStorage lock conflict may carry the driver's error as
            # its context: it is a conflict, not an outage.)
            now = time.monotonic()
            if self.down_since is None:
                self.down_since = now
                log.warning('database unavailable (%s: %s); waiting up to '
                            '%ss', type(exc).__name__, exc, self.outage)
            if now - self.down_since >= self.outage:
                raise StorageUnavailable(
                    'the database could not be reached for %.0fs: %s: %s'
                    % (now - self.down_since, type(exc).__name__, exc)
                ) from exc
            _count(self.stats, 'outages')
            time.sleep(self.pause)
            self.pause = min(self.pause * 2, self.maxpause)
            return True
        if conflict:
            self.tries += 1
            if self.tries >= self.conflicts:
                return False
            _count(self.stats, 'conflicts')
            if self.stats is not None:
                where = self.stats.setdefault('conflicts_by_class', {})
                name = str(getattr(exc, 'class_name', None)
                           or type(exc).__name__)
                where[name] = where.get(name, 0) + 1
            return True
        return False


def attempts(tm, conflicts=10, outage=60.0, stats=None, pause=0.1,
             maxpause=2.0):
    """Attempts of a transaction in ``tm`` (see the module docstring)."""
    run = _Run(tm, conflicts, outage, stats, pause, maxpause)
    _count(stats, 'transactions')
    while not run.done:
        try:
            # Beginning polls the storage for invalidations: with
            # RelStorage, that is where a server that is down shows first.
            tm.begin()
        except Exception as exc:
            _abort(tm)
            if run.failed(exc):
                continue
            raise
        yield _Attempt(run)

"""What the threads of a processor need besides ZODB: telling storage
outages from other errors, quiet clean-up, back-off, and a hook on the
database's invalidations to wake idle threads at once.
"""
import logging
import random
import threading
import traceback

from ZODB.POSException import StorageError

from remotetask.interfaces import StorageUnavailable
from remotetask.retry import disconnectErrors

log = logging.getLogger('remotetask.worker')

def storageErrors():
    """Errors that mean "the database can not be reached right now" (ZEO's
    ClientDisconnected is a StorageError; RelStorage passes on the database
    driver's connection errors): wait and try again, never give up on a job
    or end a thread for them.  A function, used as ``except
    storageErrors():`` (evaluated only when an exception is matched), so
    that the driver's classes join once RelStorage imported the driver
    (``retry.disconnectErrors``)."""
    return (StorageError, StorageUnavailable, OSError) + disconnectErrors()


def errorText(exc):
    return ''.join(traceback.format_exception_only(type(exc), exc)).strip()


def abort(tm):
    try:
        tm.abort()
    except Exception:
        log.debug('abort failed', exc_info=True)


def close(conn):
    try:
        conn.close()
    except Exception:
        log.debug('closing a connection failed', exc_info=True)


def pause(failures, event):
    """Back off after the ``failures``-th storage error in a row: wait up
    to 5 seconds (with jitter), or until ``event`` is set."""
    delay = min(5.0, 0.2 * 2 ** min(failures, 5)) * random.uniform(.5, 1)
    event.wait(delay)


class InvalidationHooks:
    """Calls ``callback(oids)`` whenever the database learns that other
    connections committed changes (from this process or, over ZEO, from
    another one).  It wraps the two entry points of ZODB's MVCC adapter,
    once per database; storages without one (RelStorage polls) get no
    hook and processors fall back to their clock's poll."""

    def __init__(self):
        self._lock = threading.Lock()

    def _adapter(self, db):
        adapter = getattr(db, '_mvcc_storage', None)
        if adapter is None or not hasattr(adapter, '_invalidate_finish') \
                or not hasattr(adapter, 'invalidate'):
            return None
        return adapter

    def add(self, db, callback):
        adapter = self._adapter(db)
        if adapter is None:
            return
        with self._lock:
            callbacks = adapter.__dict__.get('_remotetask_callbacks')
            if callbacks is None:
                callbacks = adapter._remotetask_callbacks = []
                self._wrap(adapter, callbacks)
            callbacks.append(callback)

    def remove(self, db, callback):
        adapter = self._adapter(db)
        with self._lock:
            callbacks = getattr(adapter, '_remotetask_callbacks', None)
            if callbacks and callback in callbacks:
                callbacks.remove(callback)

    @staticmethod
    def _wrap(adapter, callbacks):
        def notify(oids):
            for callback in list(callbacks):
                try:
                    callback(oids)
                except Exception:
                    log.exception('invalidation callback failed')

        invalidate = adapter.invalidate
        finish = adapter._invalidate_finish

        def wrappedInvalidate(tid, oids, *args, **kw):
            result = invalidate(tid, oids, *args, **kw)
            notify(oids)
            return result

        def wrappedFinish(tid, oids, *args, **kw):
            result = finish(tid, oids, *args, **kw)
            notify(oids)
            return result

        adapter.invalidate = wrappedInvalidate
        adapter._invalidate_finish = wrappedFinish


#: The hooks of this process.
hooks = InvalidationHooks()

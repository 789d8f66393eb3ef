"""Packing: giving the disk back.

A FileStorage only grows: every transaction appends the new state of the
objects it changed, and finished jobs removed by retention (or ``clean``)
stay in the file until it is packed.  ``pack(db, days)`` packs the storage
of an open ``ZODB.DB`` (a FileStorage opened here, or through a ZEO client
the server's storage: ``remotetask pack`` works against a FileStorage, a
ZEO server or the process serving a FileStorage to the others, and
RelStorage), keeping ``days`` of history.  ``Packer`` packs in a thread
every ``interval`` seconds while jobs keep running (FileStorage copies the
live records to ``Data.fs.pack`` and only takes its commit lock for the
last part): ``remotetask serve`` and ``remotetask worker`` run one when
they hold a FileStorage (``--pack-interval``, a day by default).
"""
import logging
import os
import threading
import time

from remotetask.numbers import checkNumber, shortRepr

log = logging.getLogger('remotetask.packing')

#: Default seconds between automatic packs.
DAY = 86400.0


def storageSize(db):
    """Bytes the storage of ``db`` takes (FileStorage, a ZEO client: the
    server's storage), or None if it can not say."""
    try:
        return db.storage.getSize()
    except Exception:
        return None


def holdsFile(db):
    """True if this process holds the FileStorage of ``db`` (opened it
    directly, or serves it to the other processes of the machine)."""
    from ZODB.FileStorage import FileStorage
    storage = getattr(db, 'storage', None)
    if isinstance(storage, FileStorage):
        return True
    embedded = getattr(db, 'embedded', None)     # remotetask.embedded
    return embedded is not None


def pack(db, days=0.0):
    """Pack the storage of ``db``, keeping ``days`` of history; return
    ``(bytes before, bytes after)`` (None where the storage can not
    say)."""
    before = storageSize(db)
    db.pack(t=time.time(), days=days)
    return before, storageSize(db)


def _mb(size):
    return 'unknown' if size is None else '%.1f MB' % (size / 1e6)


class Packer:
    """Packs ``db`` every ``interval`` seconds in a thread of its own
    (the first time ``interval`` after ``start()``)."""

    def __init__(self, db, interval=DAY, days=0.0):
        try:
            self.interval = checkNumber('interval', interval, 0,
                                        allowLow=False, infinite=True,
                                        error=ValueError)
        except ValueError:
            raise ValueError('the pack interval must be a positive number of '
                             'seconds, not %s' % shortRepr(interval)) from None
        self.db = db
        self.days = days
        self.packs = 0
        self.failures = 0
        self.last = None            # (bytes before, bytes after)
        self._stop = threading.Event()
        self._thread = None

    def start(self):
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name='remotetask packer')
        self._thread.start()
        return self

    def stop(self, timeout=None):
        """Stop packing; a pack under way runs to its end (FileStorage has
        no way to interrupt it) unless ``timeout`` runs out first."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self):
        while not self._stop.wait(self.interval):
            self.packOnce()

    def packOnce(self):
        started = time.monotonic()
        try:
            before, after = pack(self.db, self.days)
        except Exception as e:
            # A full disk (the pack copies the live records), a pack
            # already running elsewhere...: next time.
            self.failures += 1
            log.error('packing the database failed (%s: %s); trying again '
                      'in %gs', type(e).__name__, e, self.interval)
            return None
        self.packs += 1
        self.last = (before, after)
        log.info('packed the database in %.1fs: %s -> %s',
                 time.monotonic() - started, _mb(before), _mb(after))
        return before, after


def startPacker(db, interval, days=0.0):
    """A started ``Packer`` if ``interval`` (seconds; 0: never) asks for
    one and this process holds the FileStorage of ``db``, else None."""
    if not interval or not holdsFile(db):
        return None
    log.info('packing the database every %gs (pid %d)', interval,
             os.getpid())
    return Packer(db, interval, days).start()

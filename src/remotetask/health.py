"""A full disk is an answer, not a crash.

When the disk under a FileStorage fills up, its commits fail with an
``OSError`` (``ENOSPC``, or ``EDQUOT`` over quota), raised from deep in
the storage, sometimes as the cause or context of another exception.
FileStorage truncates the failed transaction's records, so nothing that
was committed before is lost, and commits work again once space is freed.
What the rest of remotetask does with it:

- ``guardFileStorage(storage)``: a FileStorage does NOT survive a write
  that fails for a full disk while it runs: the failed bytes stay in its
  file object's buffer and a later flush writes them where the next
  transaction goes (measured: "Non-zero version length" on the next
  read).  So every FileStorage remotetask opens checks, when it votes,
  that the disk has room for the transaction plus ``RESERVE`` bytes and
  otherwise refuses it with ``ENOSPC`` before it writes a byte: the
  transaction aborts cleanly, and the storage goes on once space is
  freed;
- ``diskFull(exc)`` finds such an error in an exception's chain;
- the JSON API answers 503 with a message naming it (and ``Retry-After``),
  XML-RPC a fault ``DISK_FULL`` (8), the command line one line
  (``DiskFullError``, raised by ``db.ServiceRunner``);
- processors wait, backing off, and run the job again once a commit
  works (they treat it as a storage outage);
- this process remembers the condition (``STATE``): set by any of the
  above when it meets a full disk, cleared by the next commit that works
  (``noteCommitted``: a guarded FileStorage calls it after each commit,
  so the heartbeats of a process that holds the file clear it within
  seconds of space being freed, even when no job is added); ``/metrics``
  shows it
  (``remotetask_storage_disk_full``) and the page a banner (``GET
  /api/health``).
"""
import errno
import os
import threading
import time

from remotetask.interfaces import DiskFullError

FULL_ERRNOS = frozenset((errno.ENOSPC, errno.EDQUOT))

#: Bytes a FileStorage keeps free beside the transaction it commits (for
#: its temporary file, its index when it closes, the logs).
RESERVE = 256 * 1024


def freeBytes(path):
    """Bytes an unprivileged process may still write where ``path`` is."""
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def guardFileStorage(storage, reserve=RESERVE):
    """Make ``storage`` (a FileStorage) refuse a transaction the disk has
    no room for, before it writes anything to its file, and clear the
    disk-full condition of this process after each commit (see above)."""
    vote = storage.tpc_vote
    directory = os.path.dirname(storage._file_name)

    def tpc_vote(transaction):
        tfile = getattr(storage, '_tfile', None)
        pending = tfile.tell() if tfile is not None else 0
        needed = pending + 1024 + reserve
        try:
            free = freeBytes(directory)
        except OSError:
            free = None
        if free is not None and free < needed:
            raise OSError(errno.ENOSPC, 'No space left on device (%d bytes '
                          'free, %d needed for this transaction and the '
                          'reserve)' % (free, needed))
        return vote(transaction)

    finish = storage.tpc_finish

    def tpc_finish(transaction, f=None):
        tid = finish(transaction, f)
        STATE.noteCommitted()       # space was found: the disk is not full
        return tid

    storage.tpc_vote = tpc_vote
    storage.tpc_finish = tpc_finish
    return storage


def diskFull(exc):
    """The ``OSError`` saying the disk is full in ``exc``'s chain (itself,
    its cause or its context, a few levels deep), or None."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, DiskFullError):
            return exc
        if isinstance(exc, OSError) and exc.errno in FULL_ERRNOS:
            return exc
        remote = _serverOSError(exc)
        if remote is not None:
            return remote
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def _serverOSError(exc):
    """The ``OSError`` a ZEO server met (the embedded server of
    ``remotetask.embedded``, or runzeo), which its clients get as
    ``ServerException('builtins.OSError', (errno, text))``; or None."""
    args = getattr(exc, 'args', ())
    if type(exc).__name__ != 'ServerException' or len(args) != 2:
        return None
    name, detail = args
    if name not in ('builtins.OSError', 'exceptions.OSError') or not (
            isinstance(detail, tuple) and detail
            and detail[0] in FULL_ERRNOS):
        return None
    return OSError(*detail[:2])


def message(exc):
    """A one-line message naming the cause."""
    return ('the disk of the database is full (%s): nothing was stored; free '
            'some space and try again' % (
                exc.strerror if isinstance(exc, OSError) and exc.strerror
                else exc))


class _State:
    """The disk-full condition as this process last saw it."""

    def __init__(self):
        self._lock = threading.Lock()
        self.full_since = None      # epoch seconds, or None
        self.last_error = None
        self.seen = 0               # how many times a full disk was met

    def noteFull(self, exc, now=None):
        with self._lock:
            if self.full_since is None:
                self.full_since = time.time() if now is None else now
            self.last_error = message(exc)
            self.seen += 1

    def noteCommitted(self):
        if self.full_since is not None:      # (cheap when all is well)
            with self._lock:
                self.full_since = None

    @property
    def full(self):
        return self.full_since is not None

    def info(self):
        with self._lock:
            return {'disk_full': self.full_since is not None,
                    'since': self.full_since, 'error': self.last_error,
                    'seen': self.seen}


#: The condition in this process.
STATE = _State()


def check(exc):
    """If ``exc`` says the disk is full: note it and return the
    ``DiskFullError`` to raise instead (``raise check(e) from e``), else
    None."""
    found = diskFull(exc)
    if found is None:
        return None
    STATE.noteFull(found)
    if isinstance(found, DiskFullError):
        return found
    return DiskFullError(message(found))


def beforeClose(db):
    """Closing a FileStorage writes its index file; on a full disk that
    fails with a traceback in the log.  Skip it then (one line instead):
    the next open rebuilds the index from the file."""
    from ZODB.FileStorage import FileStorage
    storage = getattr(db, 'storage', None)
    embedded = getattr(db, 'embedded', None)    # served to other processes
    if embedded is not None:
        storage = getattr(embedded, 'storage', None)
    if not isinstance(storage, FileStorage):
        return
    try:
        free = freeBytes(os.path.dirname(storage._file_name))
    except OSError:
        return
    if free < RESERVE:
        import logging
        logging.getLogger('remotetask.health').warning(
            'the disk of the database is full (%d bytes free): its index '
            'is not saved; it is rebuilt when the file is next opened', free)
        storage._save_index = lambda: None

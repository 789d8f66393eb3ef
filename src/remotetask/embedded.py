"""The embedded ZEO server: one FileStorage shared by every local process.

A FileStorage can be opened by one process at a time.  So the long-running
commands (``remotetask serve``, ``remotetask worker``) that open a
FileStorage serve it to the other processes of the machine with ZEO's own
server (``ZEO.StorageServer.StorageServer``, run in a thread of the process)
on a Unix socket next to the file.  The holder's own ``ZODB.DB`` uses the
FileStorage directly (no ZEO round trip for its own claims, loads and
commits); invalidations are bridged both ways inside the storage's
``tpc_finish`` callback, under its commit lock and before its last
transaction id moves (``Bridge``; the argument is in docs/onemachine.md),
so every process sees every other's commits at once.  Beside ``Data.fs``:

- ``Data.fs.sock``: the socket (when the path is too long for a Unix
  socket, ``$TMPDIR/remotetask-UID/HASH.sock``);
- ``Data.fs.zeo``: the discovery file, JSON: ``pid``, ``host``,
  ``address`` (the socket), ``version`` (remotetask's), ``started``,
  ``storage`` (the file).

Any command given the same database (``--db``, the default included) reads
the discovery file and connects through the socket; with no live server
there, it opens the file itself (and, for ``serve`` and ``worker``, starts
serving it).  Stale files left by a process that was killed (its pid gone,
its socket refusing) are removed by the next process that holds the file's
lock: they never stop it from starting.  A process of another remotetask
version is refused with a clear error, as is a file held by a process that
does not share it (a plain ``FileStorage`` user, ``runzeo``...).

``openFile(path, factory, dbkw, share)`` is called by ``remotetask.db.
openDB`` for ``file://`` URIs and plain paths.
"""
import errno
import json
import logging
import os
import socket
import threading
import time

import ZODB
import zc.lockfile

from remotetask import zeobatch
from remotetask.interfaces import ConfigurationError
from remotetask.version import VERSION

log = logging.getLogger('remotetask.embedded')

INFO_SUFFIX = '.zeo'
SOCKET_SUFFIX = '.sock'

#: Seconds a command waits for a file held by another process to become
#: available (a short command holds it for a moment) or to be served (the
#: holder writes its discovery file right after opening the file).
WAIT = 5.0

#: Longest Unix socket path (sun_path is 108 bytes with the final NUL).
_MAX_SOCKET_PATH = 107


class _OneLineDiskFull(logging.Filter):
    """ZEO's server logs the error of a transaction it could not vote with
    its traceback; a full disk (refused by ``remotetask.health``'s guard
    before anything is written) is one line: the client gets the error,
    and processing resumes by itself when there is room again."""

    def filter(self, record):
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC,
                                                       errno.EDQUOT):
            record.msg = '%s: %s' % (record.getMessage(), exc)
            record.args = ()
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, 'WARNING'
        return True


_FILTER = _OneLineDiskFull()


class DatabaseBusy(ConfigurationError):
    """The file is held by a process that does not share it, or by one of
    another remotetask version."""


def infoPath(path):
    return path + INFO_SUFFIX


def socketPath(path):
    """The socket of ``path``'s server: next to the file if the path fits
    in a Unix socket address, else in a private directory of $TMPDIR."""
    candidate = path + SOCKET_SUFFIX
    if len(os.fsencode(candidate)) <= _MAX_SOCKET_PATH:
        return candidate
    import hashlib      # (not at start-up: a few ms of every command)
    import tempfile
    directory = os.path.join(tempfile.gettempdir(),
                             'remotetask-%d' % os.getuid())
    os.makedirs(directory, mode=0o700, exist_ok=True)
    digest = hashlib.sha256(os.fsencode(path)).hexdigest()[:24]
    return os.path.join(directory, digest + SOCKET_SUFFIX)


def readInfo(path):
    """The discovery file of ``path`` as a dict, or None (missing, or not
    one we can read: treated as stale)."""
    try:
        with open(infoPath(path), encoding='utf-8') as f:
            info = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or not isinstance(info.get('address'), str):
        return None
    return info


def _pidAlive(pid):
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _accepts(address, timeout=2.0):
    """True if something listens on the Unix socket ``address``."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(address)
        return True
    except OSError:
        return False
    finally:
        s.close()


def liveServer(path):
    """The discovery info of a live server of ``path``, or None.

    :raises DatabaseBusy: if it is run by another remotetask version.
    """
    info = readInfo(path)
    if info is None:
        return None
    if info.get('host') not in (None, socket.gethostname()):
        return None
    if not _pidAlive(info.get('pid')) or not _accepts(info['address']):
        return None
    if info.get('version') != VERSION:
        raise DatabaseBusy(
            'the database %s is served by remotetask %s (pid %s); this is '
            'remotetask %s: run one version on a database (stop that '
            'process, or use its version)' % (
                path, info.get('version'), info.get('pid'), VERSION))
    return info


def _lockHolder(path):
    """The pid written in ``path``'s lock file (zc.lockfile), or None."""
    try:
        with open(path + '.lock', encoding='ascii', errors='replace') as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _remove(filename):
    try:
        os.remove(filename)
    except FileNotFoundError:
        pass


def clientDB(info, dbkw, cls=ZODB.DB, wait_timeout=30.0):
    """A ``cls`` (``ZODB.DB``) on a ZEO client of the server ``info``
    describes."""
    from ZEO.ClientStorage import ClientStorage
    options = {}
    if info.get('blob_dir'):
        options.update(blob_dir=info['blob_dir'], shared_blob_dir=True)
    storage = ClientStorage(info['address'], wait_timeout=wait_timeout,
                            **options)
    zeobatch.install(storage)
    try:
        return cls(storage, **dbkw)
    except Exception:
        storage.close()
        raise


class Bridge:
    """Carries the invalidations between the holder's own ``ZODB.DB``
    (on the FileStorage directly) and the ZEO clients of the embedded
    server (the other processes).

    Both directions run inside the FileStorage's ``tpc_finish`` callback,
    i.e. under its commit lock (so in commit order) and before
    ``lastTransaction()`` moves, and while its file pool's write lock keeps
    every load waiting until the transaction is on disk and in the index:

    - a commit of the holder's connections: ZODB's
      ``MVCCAdapterInstance.tpc_finish`` calls the adapter's
      ``_invalidate_finish(tid, oids, instance)``; wrapped here to also
      call ``StorageServer.invalidate(None, storage_id, tid, oids)``, as
      ZEO does for its own clients' commits;
    - a commit of a ZEO client: ``ZEOStorage.tpc_finish`` passes its
      ``_invalidate`` as the callback, which calls
      ``server.invalidate(zeo_storage, ...)``; ``_Server`` then also calls
      the holder's ``MVCCAdapter.invalidate(tid, oids)`` (looked up at
      call time, so ``remotetask.threads``' hooks see it and wake idle
      processors).
    """

    def __init__(self, server, storage_id):
        self.server = server
        self.storage_id = storage_id
        self.db = None

    def attach(self, db):
        adapter = db._mvcc_storage
        finish = adapter._invalidate_finish
        server, storage_id = self.server, self.storage_id

        def invalidateFinish(tid, oids, committing_instance):
            result = finish(tid, oids, committing_instance)
            if oids:
                # To the other processes (every ZEO client: none of them
                # made this commit).
                server.invalidate(None, storage_id, tid, list(oids))
            return result

        adapter._invalidate_finish = invalidateFinish
        self.db = db

    def fromClient(self, tid, oids):
        """A ZEO client committed ``tid``: tell the holder's connections."""
        db = self.db
        adapter = getattr(db, '_mvcc_storage', None) if db else None
        if adapter is None or getattr(adapter, 'closed', False):
            return
        adapter.invalidate(tid, oids)


def _serverClass():
    from ZEO.StorageServer import StorageServer, ZEOStorage
    from ZEO.asyncio.server import Result

    class _ZEOStorage(ZEOStorage):
        """ZEO's handler of one client connection, for a storage that the
        holder's threads also commit to.

        ZEO's server runs every commit in its one event-loop thread, so its
        handler reads the committed tid as ``storage.lastTransaction()``
        after ``tpc_finish`` (and after sending the size info), when the
        FileStorage has already released its commit lock.  Here a holder's
        thread can commit in between: the client was then told that its
        transaction has the holder's later tid, labelled its own objects
        with it in its cache (and as their serials), and the holder's own
        invalidation with that tid came next.  ``ZEO.cache.ClientCache.
        invalidate`` drops such a record from its index but leaves it in
        the file as current, so its first eviction of it raised
        ``KeyError`` in ``_makeroom`` (and the client also saw
        ``ValueError: new last tid ...`` and wrong-serial conflicts).
        So the reply carries the tid ``tpc_finish`` returns (issue 10)."""

        def tpc_finish(self, id):
            if not self._check_tid(id):
                return
            assert self.locked, "finished called wo lock"
            self.stats.commits += 1
            tid = self.storage.tpc_finish(self.transaction, self._invalidate)
            self.async_('info', self.get_size_info())
            return Result(tid, self._clear_transaction)

        def register(self, storage_id, read_only):
            # The tid the client starts from and its joining the clients
            # that get invalidations are one step for a holder's commit:
            # FileStorage runs the commit's callback (the invalidations)
            # and moves lastTransaction() under its lock, so a client
            # registered between the two would miss that commit.
            storage = self.server.storages.get(storage_id)
            lock = getattr(storage, '_lock', None)
            if lock is None:
                return super().register(storage_id, read_only)
            with lock:
                return super().register(storage_id, read_only)

    class _Server(StorageServer):
        """ZEO's server, bridged to the holder's DB (``Bridge``); closing
        it leaves the storage to the holder's DB, which closes it."""

        bridge = None

        def create_client_handler(self):
            return _ZEOStorage(self, self.read_only)

        def invalidate(self, zeo_storage, storage_id, tid, invalidated):
            super().invalidate(zeo_storage, storage_id, tid, invalidated)
            if zeo_storage is not None and self.bridge is not None:
                self.bridge.fromClient(tid, invalidated)

        def close(self, join_timeout=1):
            storages, self.storages = self.storages, {}
            try:
                super().close(join_timeout)
            finally:
                self.storages = storages

    return _Server


class EmbeddedServer:
    """ZEO's ``StorageServer`` serving ``storage`` (the opened FileStorage
    at ``path``) on a Unix socket, in a thread of this process."""

    STORAGE_ID = '1'

    def __init__(self, storage, path):
        self.storage = storage
        self.path = path
        self.address = socketPath(path)
        self.server = None
        self.bridge = None
        self.info = None
        self._lock = threading.Lock()

    def start(self):
        for name in ('ZEO.StorageServer', 'ZEO.asyncio.server'):
            if _FILTER not in logging.getLogger(name).filters:
                logging.getLogger(name).addFilter(_FILTER)
        # We hold the file's lock: whatever socket or discovery file is
        # there was left by a process that died.
        _remove(infoPath(self.path))
        _remove(self.address)
        old = os.umask(0o077)      # the socket: this user only
        try:
            self.server = _serverClass()(self.address,
                                         {self.STORAGE_ID: self.storage})
        finally:
            os.umask(old)
        self.bridge = self.server.bridge = Bridge(self.server,
                                                  self.STORAGE_ID)
        self.server.start_thread()
        blob_dir = getattr(getattr(self.storage, 'fshelper', None),
                           'base_dir', None)
        self.info = {'pid': os.getpid(), 'host': socket.gethostname(),
                     'address': self.address, 'version': VERSION,
                     'started': time.time(), 'storage': self.path,
                     'blob_dir': blob_dir}
        log.info('serving %s to local processes on %s', self.path,
                 self.address)
        return self

    def publish(self):
        """Write the discovery file: from now on other processes connect.
        (After the holder's DB made the root object of a new file.)"""
        tmp = infoPath(self.path) + '.%d.tmp' % os.getpid()
        with open(tmp, 'w', encoding='utf-8') as f:
            json.dump(self.info, f, indent=1)
        os.replace(tmp, infoPath(self.path))

    def stop(self):
        """Stop serving (the discovery file first, then the clients'
        connections); the storage is closed by the holder's DB."""
        with self._lock:
            server, self.server = self.server, None
        if server is None:
            return
        # The discovery file first: from now on nobody tries to connect.
        current = readInfo(self.path)
        if current is not None and current.get('pid') == os.getpid():
            _remove(infoPath(self.path))
        try:
            server.close()      # closes the clients' connections
        finally:
            _remove(self.address)
        log.info('stopped serving %s', self.path)


class SharedDB(ZODB.DB):
    """The holder's ``ZODB.DB``, on the FileStorage directly, which the
    embedded server also serves to the other local processes; closing it
    stops the server first (its clients are disconnected before the file
    is closed)."""

    embedded = None
    _closed = False

    def __init__(self, storage, **dbkw):
        self._sharing = threading.Lock()
        super().__init__(storage, **dbkw)

    def share(self):
        """Start serving the file to the other local processes (once; not
        after ``close()``).  ``openFile(share=True)`` calls it; with
        ``share='later'`` its caller does, once its own work has started
        (a worker: right after its processor started; docs/startup.md).

        The holder's commits wait meanwhile: ZEO's server reads the file's
        last transactions (its invalidation queue) and the bridge is
        attached under the storage's commit lock, so that no commit falls
        between the two."""
        embedded = self.embedded
        with self._sharing:
            if self._closed or embedded is None or \
                    embedded.server is not None:
                return
            try:
                with self.storage._commit_lock:
                    embedded.start()
                    embedded.bridge.attach(self)
                embedded.publish()
            except Exception:
                embedded.stop()
                raise

    def close(self):
        with self._sharing:
            self._closed = True
        try:
            if self.embedded is not None:
                self.embedded.stop()
        finally:
            super().close()


def openFile(path, factory, dbkw, share=False, wait=WAIT):
    """Open the FileStorage ``path`` (``factory()`` opens it) as a
    ``ZODB.DB`` with ``dbkw``:

    - through the live embedded server of another process if there is one;
    - else directly, and with ``share`` also serving it to the other local
      processes (the returned DB uses the file directly; ``Bridge``); with
      ``share='later'`` the caller starts the server (``SharedDB.share()``:
      a worker does once its processor runs).

    :raises DatabaseBusy: if the file is held by a process that does not
        share it (after waiting ``wait`` seconds for it), or served by
        another remotetask version.
    """
    deadline = time.monotonic() + wait
    while True:
        info = liveServer(path)
        if info is not None:
            return clientDB(info, dbkw)
        try:
            storage = factory()
            break
        except zc.lockfile.LockError as e:
            if time.monotonic() > deadline:
                holder = _lockHolder(path)
                raise DatabaseBusy(
                    'the database file://%s is in use by another process '
                    '(%s) that does not share it; a FileStorage is opened by '
                    'one process at a time: stop it, or run a ZEO server to '
                    'share it (remotetask serve and remotetask worker share '
                    'the file they open with the commands of this machine)'
                    % (path, 'pid %s' % holder if holder else e))
            time.sleep(0.1)
    if not share:
        _remove(infoPath(path))     # we hold the lock: it is stale
        try:
            return ZODB.DB(storage, **dbkw)
        except Exception:
            storage.close()
            raise
    # The holder's own DB on the file itself; the bridge carries
    # invalidations between it and the server's clients.
    try:
        database = SharedDB(storage, **dbkw)
    except Exception:
        storage.close()
        raise
    database.embedded = EmbeddedServer(storage, path)
    if share == 'later':
        return database
    try:
        database.share()
    except Exception:
        database.close()
        raise
    return database


"""Opening databases by URI and finding the service in them.

A database is named by a zodburi URI: ``file:///abs/path/Data.fs``,
``memory://``, ``zeo://host:port``, RelStorage's
``postgres://USER:PASSWORD@HOST:PORT/DBNAME?option=value`` (options are
RelStorage's, e.g. ``keep_history=false``, ``cache_local_mb=50``) and
whatever else zodburi resolvers are installed.  For PostgreSQL,
``postgresql://`` is taken as ``postgres://``, and a missing port or user
is filled in (5432, the OS user name, as libpq does) because RelStorage's
resolver would pass them on as the string ``'None'``.  A plain path (no ``://``) is
taken as a FileStorage file.  The service lives at the database root under a
key (``tasks`` by default) and is created there if missing.
"""
import functools
import os

import transaction
import zc.lockfile
import ZODB

from remotetask import health, retry
from remotetask.interfaces import ConfigurationError  # noqa: F401
from remotetask.root import DEFAULT_SERVICE, findService

DEFAULT_DB = os.path.join('var', 'Data.fs')


def normalizeURI(uri):
    """Turn a plain path into a file:// URI; leave URIs alone."""
    if uri is None:
        uri = DEFAULT_DB
    if '://' not in uri:
        path = os.path.abspath(uri)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return 'file://' + path
    if uri.startswith(('postgres://', 'postgresql://')):
        return _normalizePostgres(uri)
    if uri.startswith('file://'):
        path = uri[len('file://'):].split('?', 1)[0]
        if path and os.path.isabs(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
    return uri


def _normalizePostgres(uri):
    import getpass
    from urllib.parse import urlsplit, urlunsplit
    parts = urlsplit(uri)
    host = parts.hostname or '127.0.0.1'
    if ':' in host:
        host = '[%s]' % host
    user = parts.username or getpass.getuser()
    auth = user if parts.password is None else '%s:%s' % (user,
                                                          parts.password)
    try:
        port = parts.port or 5432
    except ValueError as e:
        raise ConfigurationError('bad database URI %r: %s' % (uri, e))
    if not parts.path.strip('/'):
        raise ConfigurationError('bad database URI %r: no database name '
                                 '(postgres://USER@HOST:PORT/DBNAME)' % uri)
    return urlunsplit(('postgres', '%s@%s:%d' % (auth, host, port),
                       parts.path, parts.query, ''))


def fileStorageFile(uri):
    """The FileStorage file a ``--db`` value names (None: the default
    file), without creating its directory; None for other storages."""
    if uri is None:
        uri = DEFAULT_DB
    if '://' not in uri:
        return os.path.abspath(uri)
    return fileStoragePath(uri)


def fileStoragePath(uri):
    """The file of a ``file://`` URI (normalized), else None."""
    if not uri.startswith('file://'):
        return None
    path = uri[len('file://'):].split('?', 1)[0]
    return path if path and os.path.isabs(path) else None


def openDB(uri=None, share=False, **overrides):
    """Open the ZODB ``DB`` named by ``uri`` (see the module docstring).

    A FileStorage (a ``file://`` URI or a path) is opened through the
    embedded ZEO server of the local process that holds it, if one does;
    else directly, and with ``share`` this process serves it to the others
    (``remotetask.embedded``; ``serve`` and ``worker`` do); with
    ``share='later'`` once the caller calls the DB's ``share()``.

    :raises ConfigurationError: for a URI no resolver understands, or a
        file held by a process that does not share it.
    """
    uri = normalizeURI(uri)
    path = fileStoragePath(uri)
    if path is not None and '?' not in uri:
        # A plain FileStorage, as zodburi's file:// resolver makes it, without
        # loading every resolver (ZEO's client, its asyncio...): the
        # commands that open the file directly start faster.
        factory = _guarded(functools.partial(_fileStorage, path))
        dbkw = dict(FILE_DB_DEFAULTS, **overrides)
        from remotetask import embedded
        return embedded.openFile(path, factory, dbkw, share=share)
    import zodburi
    try:
        factory, dbkw = zodburi.resolve_uri(uri)
    except KeyError as e:
        raise ConfigurationError(
            'unsupported database URI %r (no resolver for %s; RelStorage '
            'URIs need "pip install remotetask[relstorage]")' % (uri, e))
    except Exception as e:
        raise ConfigurationError('bad database URI %r: %s' % (uri, e))
    dbkw.update(overrides)
    factory = _guarded(factory)
    path = fileStoragePath(uri)
    if path is not None:
        from remotetask import embedded
        return embedded.openFile(path, factory, dbkw, share=share)
    try:
        storage = factory()
    except zc.lockfile.LockError as e:
        raise ConfigurationError(
            'the database %s is in use by another process (%s); a '
            'FileStorage is opened by one process at a time: run a ZEO '
            'server to share it' % (uri, e))
    if type(storage).__name__ == 'ClientStorage':
        # Its stores go to the server in one go (remotetask.zeobatch).
        from remotetask import zeobatch
        zeobatch.install(storage)
    return ZODB.DB(storage, **dbkw)


#: What zodburi gives ``ZODB.DB`` for a ``file://`` URI without options.
FILE_DB_DEFAULTS = {'cache_size': 10000, 'pool_size': 7,
                    'database_name': 'unnamed'}

#: Objects each connection of a worker keeps in its cache (``remotetask
#: worker --cache-size``): a worker touches each job once, so what is worth
#: keeping is the structures (the service, the queue's and the indexes'
#: tree nodes), a few hundred objects a transaction; zodburi's 10,000 fill
#: with finished jobs (about 1 KB each in memory) in every thread's
#: connection.  See docs/uptime.md, "A worker's memory".
WORKER_CACHE_SIZE = 2000


def uriCacheSize(uri):
    """The ``connection_cache_size`` a zodburi URI gives, or None."""
    from urllib.parse import parse_qs
    query = (uri or '').partition('?')[2]
    values = parse_qs(query).get('connection_cache_size')
    return values[-1] if values else None


def _fileStorage(path):
    from ZODB.FileStorage import FileStorage
    return FileStorage(path)


def _guarded(factory):
    """``factory`` whose FileStorage refuses transactions the disk has no
    room for (``health.guardFileStorage``)."""
    def make():
        storage = factory()
        from ZODB.FileStorage import FileStorage
        if isinstance(storage, FileStorage):
            health.guardFileStorage(storage)
        return storage
    return make


def getService(root, name=DEFAULT_SERVICE, create=False):
    """The service at ``root[name]`` (``root`` is a connection's root or a
    connection); created (not committed) if missing and ``create``."""
    if hasattr(root, 'root'):
        root = root.root()
    service = findService(root, name)
    if service is None:
        if not create:
            raise ConfigurationError(
                'no task service under %r at the database root' % name)
        from remotetask.service import TaskService
        service = TaskService()
        service.__name__ = name
        root[name] = service
    return service


def ensureService(db, name=DEFAULT_SERVICE):
    """Create the service in ``db`` if it is missing, and commit."""
    ServiceRunner(db, name)(lambda service: None)


class ServiceRunner:
    """Runs functions on the service in transactions of their own.

    ``runner(func, *args)`` opens a connection with its own transaction
    manager, calls ``func(service, *args)``, commits, and retries on
    conflicts (any ``TransientError``) up to ``attempts`` times, and waits
    up to ``outage`` seconds for a database server that is down
    (``remotetask.retry.attempts``).  Used by the command line, the tracker
    facade and the web service.
    """

    def __init__(self, db, name=DEFAULT_SERVICE, attempts=10, outage=60.0):
        self.db = db
        self.name = name
        self.attempts = attempts
        self.outage = outage

    def __call__(self, func, *args, **kw):
        tm = transaction.TransactionManager()
        conn = self.db.open(tm)
        try:
            try:
                for attempt in retry.attempts(tm, self.attempts,
                                              self.outage):
                    with attempt:
                        service = getService(conn, self.name, create=True)
                        result = func(service, *args, **kw)
            except OSError as e:
                # A full disk: a clear error (remotetask.health).
                full = health.check(e)
                if full is None:
                    raise
                raise full from e
            health.STATE.noteCommitted()
            return result
        finally:
            conn.close()

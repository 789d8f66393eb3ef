"""remotetask in Pyramid applications (with pyramid_zodbconn and pyramid_tm).

``config.include('remotetask.pyramid')`` (it includes ``pyramid_tm`` and
``pyramid_zodbconn``) gives

- ``request.tasks``: the task service on the request's own ZODB connection
  (``pyramid_zodbconn.get_connection(request)``, in ``request.tm``'s
  transaction), so a job a view adds commits with the view's data, or not
  at all when the view fails;
- ``config.add_task(name, function, **policy)``: registers a function as
  the task ``name`` (a ``SimpleTask``; ``policy``: ``time_limit``,
  ``max_retries``, ... as for ``<remotetask:task>``);
- when the application is created (``ApplicationCreated``): the service,
  created at its root key if missing, and a processor for it in this
  process unless ``remotetask.processing`` is false (then run
  ``remotetask worker`` next to the application).  The processor stops at
  exit and, if nothing else handles it, on SIGTERM
  (``remotetask.lifecycle``); ``stopProcessing(registry)`` stops it
  earlier.

Settings (all optional)::

    remotetask.service = tasks      the root key of the service, or a path
                                    of keys from the root (app/tasks); a
                                    missing service is created at a root
                                    key, never in a path
    remotetask.processing = true    start a processor in this process
    remotetask.concurrency = 1      its worker threads
    remotetask.lease = 30           seconds a claim holds unless renewed
    remotetask.batch = auto         jobs claimed at once: auto or a number
    remotetask.grace = 30           seconds running jobs get to finish at
                                    shut-down before they are handed back
    remotetask.stop_on_sigterm = true

A bad value raises pyramid's ``ConfigurationError`` naming the setting,
when the configuration is made.
"""
import logging

import transaction
from pyramid.events import ApplicationCreated
from pyramid.exceptions import ConfigurationError

from remotetask import lifecycle
from remotetask.interfaces import ITaskService
from remotetask.root import DEFAULT_SERVICE

log = logging.getLogger('remotetask.pyramid')

SETTINGS_KEY = 'remotetask.settings'


def _positive(kind, low_open):
    def parse(value):
        number = kind(value)
        if number < 0 or (low_open and number == 0) or (
                kind is int and number < 1):
            raise ValueError
        return number
    return parse


def _bool(value):
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ('true', 'yes', 'on', '1'):
        return True
    if text in ('false', 'no', 'off', '0'):
        return False
    raise ValueError(value)


def _batch(value):
    if str(value).strip().lower() == 'auto':
        return 'auto'
    return _positive(int, True)(value)


def _path(value):
    path = tuple(p for p in str(value).strip().strip('/').split('/'))
    if not all(path):
        raise ValueError
    return path


#: setting: (key in the parsed settings, parser, default, what is expected)
SETTINGS = {
    'remotetask.service': ('path', _path, (DEFAULT_SERVICE,),
                           'a root key or a path of keys (app/tasks)'),
    'remotetask.processing': ('processing', _bool, True, 'true or false'),
    'remotetask.concurrency': ('concurrency', _positive(int, True), 1,
                               'an integer >= 1'),
    'remotetask.lease': ('lease', _positive(float, True), 30.0,
                         'a positive number of seconds'),
    'remotetask.batch': ('batch', _batch, 'auto', "'auto' or an integer >= 1"),
    'remotetask.grace': ('grace', _positive(float, False), 30.0,
                         'a number of seconds >= 0'),
    'remotetask.stop_on_sigterm': ('stop_on_sigterm', _bool, True,
                                   'true or false'),
}


def readSettings(settings):
    """The remotetask settings, parsed (see the module).

    :raises ConfigurationError: naming the first bad one.
    """
    parsed = {}
    for name, (key, parse, default, what) in SETTINGS.items():
        value = settings.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            parsed[key] = default
            continue
        try:
            parsed[key] = parse(value)
        except (TypeError, ValueError):
            raise ConfigurationError('%s = %r: expected %s'
                                     % (name, value, what))
    unknown = sorted(k for k in settings if k.startswith('remotetask.')
                     and k not in SETTINGS)
    if unknown:
        raise ConfigurationError('unknown setting %s (known: %s)' % (
            ', '.join(unknown), ', '.join(sorted(SETTINGS))))
    return parsed


def findService(root, path):
    """The service at ``path`` (a tuple of keys) from the database root;
    None if the last key is missing.

    :raises ConfigurationError: if a key before it is missing, or the
        object there is not a task service.
    """
    obj = root
    for i, key in enumerate(path):
        try:
            obj = obj[key]
        except (KeyError, TypeError, AttributeError):
            if i == len(path) - 1:
                return None
            raise ConfigurationError(
                'remotetask.service = %s: no %r in %s' % (
                    '/'.join(path), key,
                    '/'.join(path[:i]) or 'the database root'))
    if not ITaskService.providedBy(obj):
        raise ConfigurationError('remotetask.service = %s: that is a %s, not '
                                 'a task service' % ('/'.join(path),
                                                     type(obj).__name__))
    upgrade = getattr(obj, 'upgradeLayout', None)
    if upgrade is not None:
        upgrade()       # a service stored by an older version
    return obj


def _database(registry):
    databases = getattr(registry, '_zodb_databases', None) or {}
    db = databases.get('')
    if db is None:
        raise ConfigurationError(
            'remotetask.pyramid needs a database: set zodbconn.uri (see '
            'pyramid_zodbconn)')
    return db


def tasks(request):
    """``request.tasks``: the service on the request's ZODB connection."""
    from pyramid_zodbconn import get_connection
    path = request.registry[SETTINGS_KEY]['path']
    service = findService(get_connection(request).root(), path)
    if service is None:
        raise ConfigurationError('remotetask.service = %s: no task service '
                                 'there' % '/'.join(path))
    return service


def ensureService(db, path):
    """The oid of the service at ``path`` in ``db``; created (and
    committed) at a root key if missing."""
    from remotetask.service import TaskService
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    try:
        for attempt in tm.attempts(5):
            with attempt:
                service = findService(conn.root(), path)
                if service is None:
                    if len(path) > 1:
                        raise ConfigurationError(
                            'remotetask.service = %s: no task service there '
                            '(one is created only at a root key)'
                            % '/'.join(path))
                    service = TaskService()
                    service.__name__ = path[0]
                    conn.root()[path[0]] = service
                    log.info('created the task service at the database '
                             'root under %r', path[0])
        return service._p_oid
    finally:
        tm.abort()
        conn.close()


def _applicationCreated(event):
    registry = event.app.registry
    settings = registry.get(SETTINGS_KEY)
    if settings is None:
        return
    db = _database(registry)
    oid = ensureService(db, settings['path'])
    if settings['processing']:
        startProcessing(registry, db, oid)


def startProcessing(registry, db=None, oid=None):
    """Start the application's processor (if it does not run); return it."""
    settings = registry[SETTINGS_KEY]
    db = db or _database(registry)
    oid = oid or ensureService(db, settings['path'])
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    try:
        processor = conn.get(oid).startProcessing(
            concurrency=settings['concurrency'], lease=settings['lease'],
            batch=settings['batch'], grace=settings['grace'])
    finally:
        tm.abort()
        conn.close()
    registry['remotetask.processor'] = processor
    lifecycle.atExit(_stopAll)
    if registry not in _applications:
        _applications.append(registry)
    if settings['stop_on_sigterm']:
        lifecycle.stopOnSigterm()
    log.info('processing %s in this process (%d thread(s))',
             '/'.join(settings['path']), settings['concurrency'])
    return processor


_applications = []


def stopProcessing(registry, timeout=None):
    """Stop the processor ``config.include`` started for this application
    (its grace period, unless ``timeout``); False if none ran."""
    if registry in _applications:
        _applications.remove(registry)
    processor = registry.get('remotetask.processor')
    if processor is None or not processor.running:
        return False
    registry['remotetask.processor'] = None
    # Through the service, so that it leaves this process's registry of
    # processors (ITaskService.isProcessing).
    from remotetask import processor as processing
    tm = transaction.TransactionManager()
    conn = processor.db.open(tm)
    try:
        processing.stopProcessing(conn.get(processor.oid), timeout)
    finally:
        tm.abort()
        conn.close()
    return True


def _stopAll():
    while _applications:
        stopProcessing(_applications.pop())


def addTask(config, name, function, **policy):
    """``config.add_task(name, function, **policy)``: see the module."""
    import zope.component
    from remotetask.interfaces import ITask
    from remotetask.task import SimpleTask
    function = config.maybe_dotted(function)
    if not callable(function):
        raise ConfigurationError('add_task(%r): %r is not callable'
                                 % (name, function))
    task = SimpleTask(function, **policy)

    def register():
        zope.component.provideUtility(task, ITask, name=name)

    config.action(('remotetask.task', name), register)


def includeme(config):
    """``config.include('remotetask.pyramid')``: see the module."""
    settings = readSettings(config.get_settings())
    config.include('pyramid_tm')
    config.include('pyramid_zodbconn')
    _database(config.registry)
    config.registry[SETTINGS_KEY] = settings
    config.add_request_method(tasks, 'tasks', reify=True)
    config.add_directive('add_task', addTask)
    config.add_subscriber(_applicationCreated, ApplicationCreated)

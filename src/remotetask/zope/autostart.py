"""Starting processors when Zope opens its database, stopping them when it
closes it.

``databaseOpened`` is a subscriber of ``zope.processlifetime``'s
``IDatabaseOpenedWithRoot`` (registered by this package's
``configure.zcml``).  It reads ``<product-config remotetask>`` (see
``remotetask.zope.config``) from the Zope configuration (``App.config``,
Zope 5 and Plone 6; or ``zope.app.appsetup``'s product configuration),
finds the services it names as local utilities (``ITaskService``) of the
sites in the root folder, and starts a processor for each in this process
(``ITaskService.startProcessing``), whose jobs run with their site set and
the configured user (``remotetask.zope.context.SiteContext``).

Every problem (a malformed entry, a missing site or service, a user no
user folder knows, a bad option value) is logged as one line on the
``remotetask.zope`` logger at start, and everything else still starts.
``REMOTETASK_AUTOSTART=off`` in the environment starts nothing (for
``zconsole run`` scripts and debug sessions that share the zope.conf).

Processors stop, each one handing its unfinished jobs back to the queue
after ``grace`` seconds, when

- the database closes (``runwsgi`` closes it when it exits, as do test
  layers): ``db.close`` is wrapped to stop them first;
- the process exits (``atexit``);
- the process gets SIGTERM, when ``stop-on-sigterm`` is on (the default)
  and nothing else handles SIGTERM (``remotetask.lifecycle``): the signal
  then raises ``SystemExit`` in the main thread, so ``runwsgi`` leaves its
  loop and closes the database as on Ctrl-C, rather than the process dying
  at once with its jobs left to the reaper.
"""
import logging
import os
import threading

import transaction
from zope.component.hooks import setHooks
from zope.component.interfaces import ISite

from remotetask import lifecycle
from remotetask.interfaces import ITaskService
from remotetask.zope.config import ANY, ROOT, readConfig
from remotetask.zope.context import (
    ApplicationContextError, SiteContext, findUser, isZope2, makeRequest,
    rootFolder, traverse)

log = logging.getLogger('remotetask.zope')

PRODUCT = 'remotetask'

_lock = threading.Lock()
#: db -> {service oid: (label, grace)} of what this module started.
_started = {}


def productConfig():
    """The ``<product-config remotetask>`` mapping, or None."""
    try:
        from App.config import getConfiguration
    except ImportError:
        pass
    else:
        configs = getattr(getConfiguration(), 'product_config', None) or {}
        if PRODUCT in configs:
            return configs[PRODUCT]
    try:
        from zope.app.appsetup.product import getProductConfiguration
    except ImportError:
        return None
    return getProductConfiguration(PRODUCT)


def disabled():
    return os.environ.get('REMOTETASK_AUTOSTART', '').strip().lower() in (
        '0', 'off', 'no', 'false')


def databaseOpened(event):
    """Subscriber of ``IDatabaseOpenedWithRoot``: see the module."""
    mapping = productConfig()
    if mapping is None:
        return
    if disabled():
        log.info('REMOTETASK_AUTOSTART=%s: no processors started',
                 os.environ['REMOTETASK_AUTOSTART'])
        return
    config, problems = readConfig(mapping)
    for problem in problems:
        log.error('<product-config remotetask> %s', problem)
    startConfigured(event.database, config)


def _where(path):
    return 'site %r' % '/'.join(path) if path else 'the root folder'


def label(path, name):
    return '%s@%s' % ('/'.join(path), name)


def _children(folder):
    items = getattr(folder, 'objectItems', None)
    return list(items() if items is not None else folder.items())


def _sites(root, spec):
    """[(path, site)] that ``spec`` names; logs what is missing."""
    if spec.site == ANY:
        found = [((), root)] if ISite.providedBy(root) else []
        for name, obj in _children(root):
            if ISite.providedBy(obj):
                found.append(((name,), obj))
        if not found:
            log.error('autostart %s: the root folder is not a site and has '
                      'no sites in it', spec)
        return found
    if spec.site == ROOT:
        if not ISite.providedBy(root):
            log.error('autostart %s: the root folder is not a site, so it '
                      'has no local task services', spec)
            return []
        return [((), root)]
    path = tuple(spec.site.split('/'))
    try:
        site = traverse(root, path)
    except ApplicationContextError as e:
        log.error('autostart %s: %s', spec, e)
        return []
    if not ISite.providedBy(site):
        log.error('autostart %s: %r is not a site, so it has no local task '
                  'services', spec, spec.site)
        return []
    return [(path, site)]


def localServices(site):
    """{name: service} of the task services registered in the site's own
    registry (not inherited from the registries it is based on)."""
    found = {}
    for registration in site.getSiteManager().registeredUtilities():
        if registration.provided.isOrExtends(ITaskService):
            found[registration.name] = registration.component
    return found


def findServices(root, spec):
    """[(path, site, name, service)] that ``spec`` names; logs what is
    missing."""
    found = []
    for path, site in _sites(root, spec):
        services = localServices(site)
        if spec.service == ANY:
            names = sorted(services)
            if not names and spec.site != ANY:
                log.error('autostart %s: %s has no task services', spec,
                          _where(path))
        elif spec.service in services:
            names = [spec.service]
        else:
            names = []
            if spec.site != ANY:
                log.error('autostart %s: %s has no task service named '
                          '%r (its task services: %s)', spec,
                          _where(path), spec.service,
                          ', '.join(sorted(services)) or 'none')
        found.extend((path, site, name, services[name]) for name in names)
    if spec.site == ANY and spec.service != ANY and not found:
        log.error('autostart %s: no site has a task service named %r',
                  spec, spec.service)
    return found


def startConfigured(db, config):
    """Start the processors ``config`` asks for in ``db``; return
    {label: processor} of those started (see the module)."""
    started = {}
    setHooks()      # so that setSite() is seen by getSiteManager()
    if not config.specs:
        log.warning('<product-config remotetask> names no services to '
                    'autostart')
        return started
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    request = None
    try:
        try:
            root = rootFolder(conn)
        except ApplicationContextError as e:
            log.error('autostart: %s; nothing started', e)
            return started
        zope2 = isZope2(root)
        if zope2:
            root, request = makeRequest(root, config.server_url)
        elif config.user is not None:
            log.error('autostart: user %r ignored: users are supported in '
                      'Zope 2-style (AccessControl) applications only',
                      config.user)
        seen = set()
        for spec in config.specs:
            for path, site, name, service in findServices(root, spec):
                if service._p_oid in seen:
                    continue
                seen.add(service._p_oid)
                user = config.user if zope2 else None
                processor = _start(db, config, path, site, name, service,
                                   user)
                if processor is not None:
                    started[label(path, name)] = processor
    finally:
        if request is not None:
            request.close()
        tm.abort()
        conn.close()
    if started:
        _installShutdown(db, config)
    return started


def _start(db, config, path, site, name, service, user):
    what = label(path, name)
    try:
        if user is not None and findUser(site, user) is None:
            log.error('autostart %s: user %r not found in the acl_users of '
                      '%s or above; not started', what, user,
                      _where(path))
            return None
        processor = service.startProcessing(
            around=SiteContext(path, user, config.server_url),
            **config.processorOptions())
    except Exception as e:
        log.error('autostart %s: not started: %s: %s', what,
                  type(e).__name__, e)
        return None
    with _lock:
        _started.setdefault(db, {})[service._p_oid] = what
    log.info('autostart %s: processing with %d thread(s)%s', what,
             config.concurrency, ' as user %r' % user if user else '')
    return processor


# -- stopping -----------------------------------------------------------------

def stopStarted(db=None, timeout=None):
    """Stop the processors this module started for ``db`` (all databases
    if None), each with its grace period unless ``timeout`` is given;
    return the labels of those stopped."""
    with _lock:
        if db is None:
            todo = list(_started.items())
            _started.clear()
        else:
            todo = [(db, _started.pop(db, {}))]
    stopped = []
    for database, services in todo:
        if not services:
            continue
        tm = transaction.TransactionManager()
        try:
            conn = database.open(tm)
        except Exception as e:
            log.error('could not stop the processors of %r: %s', database, e)
            continue
        try:
            for oid, what in services.items():
                try:
                    if conn.get(oid).stopProcessing(timeout):
                        stopped.append(what)
                        log.info('%s: processing stopped', what)
                except Exception:
                    log.exception('%s: stopping its processor failed', what)
        finally:
            tm.abort()
            conn.close()
    return stopped


def _installShutdown(db, config):
    with _lock:
        if getattr(db, '_remotetask_close', None) is None:
            original = db.close

            def close(*args, **kw):
                stopStarted(db)
                return original(*args, **kw)

            db._remotetask_close = original
            db.close = close
    lifecycle.atExit(stopStarted)
    if config.stop_on_sigterm:
        lifecycle.stopOnSigterm()

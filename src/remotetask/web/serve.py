"""``remotetask serve`` (the web service and a processor in one process):
``run(**options)`` does what the command (``remotetask.cli.serve``, which
declares the options) asks."""
import logging
import os
import signal
import socket
import sys
import threading

import click

from remotetask import db as dbmod
from remotetask.cli.common import configureLogging, loadTasks, openDatabase
from remotetask.cli.worker import BUILT_IN
from remotetask.interfaces import RemoteTaskError
from remotetask.lifecycle import twoStageSignals
from remotetask.web.auth import Users, UsersFileError, isLoopback
from remotetask.worker import SIGNALS

log = logging.getLogger('remotetask.serve')

EXAMPLES_ZCML = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    'examples.zcml')


def isLoopbackHost(host):
    """True if every address ``host`` stands for is a loopback address."""
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror:
        return False
    return bool(infos) and all(isLoopback(info[4][0].split('%')[0])
                               for info in infos)


def warnAboutUsersFile(path):
    """Say so when the users file can be read or written by others than
    its owner (its hashes can be attacked offline; whoever may write it
    may make themselves a manager)."""
    mode = os.stat(path).st_mode & 0o777
    if mode & 0o022:
        click.echo('remotetask: WARNING: users file %s can be written by '
                   'others (mode %o): anyone who can write it can make '
                   'themselves a manager; chmod 600 %s'
                   % (path, mode, path), err=True)
    elif mode & 0o044:
        click.echo('remotetask: warning: users file %s can be read by '
                   'others (mode %o): chmod 600 %s' % (path, mode, path),
                   err=True)




class _Stop(Exception):
    """Raised by the first SIGTERM or SIGINT to leave the server loop."""


def _signals(grace, hardExit=os._exit, stopping=None):
    """Install the handlers of ``serve``'s signals; return the previous
    ones.  The first signal sets ``stopping`` and leaves the server loop
    (``_Stop``); the next one exits at once with status 128 + its number
    (no clean-up: the jobs still running are handed back when their
    leases expire)."""
    def first(name):
        log.warning('%s received: the server stops; running jobs get %gs to '
                    'finish (send it again to exit at once)', name, grace)
        if stopping is not None:
            stopping.set()
        raise _Stop()

    return twoStageSignals(SIGNALS, first, hardExit, log)


def _runUntil(server, stopping):
    """``server.run()`` until ``stopping`` is set, then raise ``_Stop``.

    A signal handler runs in the main thread wherever it is, and when that
    is inside a connection's handler (closing a channel, say) waitress
    catches the ``_Stop`` it raises (``handle_error``: "uncaptured python
    exception, closing channel") and goes on serving: the SIGTERM was lost
    and ``serve`` ran until it was killed. So the loop turns one at a time
    and looks at the flag the handler sets: a lost ``_Stop`` still stops the
    server at the next turn (within the loop's timeout, a second)."""
    socketmap = getattr(server, '_map', None)
    if socketmap is None:
        socketmap = server.map          # waitress's MultiSocketServer
    while not stopping.is_set():
        server.asyncore.loop(timeout=server.adj.asyncore_loop_timeout,
                             map=socketmap,
                             use_poll=server.adj.asyncore_use_poll, count=1)
        if not socketmap:
            return
    raise _Stop()


def run(uri, service, imports, zcml, host, port, users_path, concurrency,
        lease, grace, no_processing, threads, max_body, connection_limit=1000,
        channel_timeout=30, request_timeout=15, trusted_proxy=None,
        secure_cookies=False, session_idle=3600, session_max=8 * 3600,
        pack_interval=0):
    """Run ``remotetask serve`` with its options (see remotetask.cli.serve)
    until SIGTERM or SIGINT."""
    from remotetask.processor import Processor
    from remotetask.web.app import make_app
    from remotetask.web.server import createServer

    users = None
    if users_path is not None:
        try:
            users = Users(users_path)
        except UsersFileError as e:
            raise click.BadParameter(str(e), param_hint='--users')
        if not len(users):
            raise click.BadParameter(
                'no users in %s: add one with "remotetask user add --users '
                '%s NAME --role manager"' % (users_path, users_path),
                param_hint='--users')
        warnAboutUsersFile(users_path)
    elif not isLoopbackHost(host):
        raise click.UsageError(
            'refusing to listen on %s without --users: anonymous use is '
            'allowed on loopback (127.0.0.1) only' % host)
    if not imports and not zcml:
        zcml = (EXAMPLES_ZCML,)
    configureLogging('INFO')
    loadTasks(BUILT_IN + tuple(imports), zcml)
    # A connection per HTTP thread and per processor thread, and spare.
    database = openDatabase(uri, share=True,
                            pool_size=threads + concurrency + 4)
    try:
        dbmod.ensureService(database, service)
        processor = Processor(database, service, concurrency=concurrency,
                              lease=lease, grace=grace, kind='serve')
        app = make_app(database, service, users=users, processor=processor,
                       max_body=max_body,
                       secret=os.environ.get('REMOTETASK_SECRET'),
                       session_idle=session_idle, session_max=session_max,
                       secure_cookies=secure_cookies)
        try:
            server = createServer(
                app, host, port, threads=threads, max_body=max_body,
                connection_limit=connection_limit,
                channel_timeout=channel_timeout,
                request_timeout=request_timeout,
                trusted_proxy=trusted_proxy)
        except OSError as e:
            # "[Errno 98] Address already in use" alone names no address.
            raise OSError('can not listen on %s port %d: %s'
                          % (host, port, e.strerror or e)) from e
    except (RemoteTaskError, OSError, ValueError) as e:
        database.close()
        raise click.ClickException(str(e))
    url = 'http://%s:%d/' % (host if ':' not in host else '[%s]' % host,
                             int(server.effective_port))
    from remotetask.service import TaskService
    click.echo('remotetask: serving service %r of %s on %s' % (
        service, dbmod.normalizeURI(uri), url))
    click.echo('  page %s  XML-RPC %sRPC2  API %sapi/ (%sapi/openapi.json)'
               '  metrics %smetrics' % (url, url, url, url, url))
    click.echo('  tasks: %s' % (', '.join(sorted(
        TaskService().getAvailableTasks())) or 'none'))
    if users is None:
        click.echo('  no users file: anonymous use, allowed from loopback '
                   'addresses only')
    else:
        click.echo('  users from %s (%d)' % (users_path, len(users)))
    from remotetask.packing import startPacker
    stopping = threading.Event()
    previous = _signals(grace, stopping=stopping)
    packer = None
    code = 0
    try:
        try:
            if not no_processing:
                processor.start()
                click.echo('  processing with %d thread(s)' % concurrency)
            packer = startPacker(database, pack_interval)
            if packer is not None:
                click.echo('  packing the database every %gs' % pack_interval)
            sys.stdout.flush()
            _runUntil(server, stopping)
        except _Stop:
            click.echo('remotetask: stopping')
        finally:
            server.close()
            if packer is not None:
                packer.stop(0)
            if processor.running:
                handed = processor.stop(grace)
                if handed:
                    log.warning('handed back jobs %s',
                                ', '.join(map(str, handed)))
        if processor.running:
            # A task ignored the stop: its thread can not be joined; leave
            # without waiting for it (its job was handed back).
            _closeDatabase(database)
            logging.shutdown()
            os._exit(code)
        _closeDatabase(database)
    finally:
        for s, old in previous.items():
            signal.signal(s, old)
    click.echo('remotetask: stopped')


def _closeDatabase(database):
    """Close the database at exit; a failure (a full disk: FileStorage
    writes its index file when it closes) is one line, not a traceback.
    What was committed is in the file; the index is rebuilt at the next
    open."""
    from remotetask import health
    try:
        health.beforeClose(database)
        database.close()
    except Exception as e:
        click.echo('remotetask: the database did not close cleanly (%s: %s);'
                   ' committed jobs are safe, its index is rebuilt when it '
                   'is next opened' % (type(e).__name__, e), err=True)


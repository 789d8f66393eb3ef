"""``remotetask serve`` (the web service and a processor in one process):
``run(**options)`` does what the command (``remotetask.cli.serve``, which
declares the options) asks."""
import logging
import os
import signal
import socket
import sys

import click

from remotetask import db as dbmod
from remotetask.cli.common import configureLogging, loadTasks, openDatabase
from remotetask.cli.worker import BUILT_IN
from remotetask.interfaces import RemoteTaskError
from remotetask.web.auth import Users, UsersFileError, isLoopback

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


SIGNALS = (signal.SIGTERM, signal.SIGINT)


class _Stop(Exception):
    """Raised by the first SIGTERM or SIGINT to leave the server loop."""


def _signals(grace, hardExit=os._exit):
    """Install the handlers of ``serve``'s signals; return the previous
    ones.  The first signal leaves the server loop (``_Stop``); the next
    one exits at once with status 128 + its number (no clean-up: the jobs
    still running are handed back when their leases expire)."""
    received = []

    def handler(signum, frame):
        received.append(signum)
        name = signal.Signals(signum).name
        if len(received) > 1:
            log.warning('second signal (%s): exiting at once', name)
            hardExit(128 + signum)
            return
        log.warning('%s received: the server stops; running jobs get %gs to '
                    'finish (send it again to exit at once)', name, grace)
        raise _Stop()

    return {s: signal.signal(s, handler) for s in SIGNALS}


def run(uri, service, imports, zcml, host, port, users_path, concurrency,
        lease, grace, no_processing, threads, max_body):
    """Run ``remotetask serve`` with its options (see remotetask.cli.serve)
    until SIGTERM or SIGINT."""
    import waitress.server

    from remotetask.processor import Processor
    from remotetask.web.app import make_app

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
                       secret=os.environ.get('REMOTETASK_SECRET'))
        server = waitress.server.create_server(
            app, host=host, port=port, threads=threads,
            max_request_body_size=max_body, ident='remotetask')
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
    previous = _signals(grace)
    code = 0
    try:
        try:
            if not no_processing:
                processor.start()
                click.echo('  processing with %d thread(s)' % concurrency)
            sys.stdout.flush()
            server.run()
        except _Stop:
            click.echo('remotetask: stopping')
        finally:
            server.close()
            if processor.running:
                handed = processor.stop(grace)
                if handed:
                    log.warning('handed back jobs %s',
                                ', '.join(map(str, handed)))
        if processor.running:
            # A task ignored the stop: its thread can not be joined; leave
            # without waiting for it (its job was handed back).
            database.close()
            logging.shutdown()
            os._exit(code)
        database.close()
    finally:
        for s, old in previous.items():
            signal.signal(s, old)
    click.echo('remotetask: stopped')


"""``remotetask serve`` (the web service and a processor in one process)
and ``remotetask user`` (the users file)."""
import logging
import os
import signal
import socket
import sys

import click

from remotetask import cli
from remotetask import db as dbmod
from remotetask.interfaces import RemoteTaskError
from remotetask.web.app import MAX_BODY
from remotetask.web.auth import (
    ROLES, Users, UsersFileError, addToken, addUser, isLoopback)

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


class _Stop(Exception):
    """Raised by the SIGTERM handler to leave the server loop."""


def _raiseStop(signum, frame):
    raise _Stop()


@click.command()
@cli.db_options
@click.option('--host', default='127.0.0.1', show_default=True,
              help='Address to listen on.  Anything but loopback needs '
                   '--users.')
@click.option('--port', default=8080, show_default=True,
              type=click.IntRange(0, 65535))
@click.option('--users', 'users_path', metavar='FILE',
              type=click.Path(dir_okay=False),
              help='Users file (remotetask user add); without it, anonymous '
                   'use from loopback only.')
@click.option('--concurrency', default=1, show_default=True,
              type=click.IntRange(1), help='Jobs run at the same time.')
@click.option('--lease', default=30.0, show_default=True,
              type=click.FloatRange(0.1), help='Lease of a running job (s).')
@click.option('--no-processing', is_flag=True,
              help='Serve only; start processing later from the page or '
                   'the API.')
@click.option('--threads', default=8, show_default=True,
              type=click.IntRange(1), help='HTTP worker threads.')
@click.option('--max-body', default=MAX_BODY, show_default=True,
              type=click.IntRange(1), help='Largest request body (bytes).')
def serve(uri, service, imports, zcml, host, port, users_path, concurrency,
          lease, no_processing, threads, max_body):
    """Serve XML-RPC, the JSON API, the management page and /metrics, and
    process the jobs, in this process.  With no --import or --zcml, the
    example tasks (echo, sum, sleep, fail) are loaded."""
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
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s'
                        ' %(name)s: %(message)s')
    cli.loadTasks(imports, zcml)
    try:
        # A connection per HTTP thread and per processor thread, and spare.
        database = dbmod.openDB(uri, pool_size=threads + concurrency + 4)
    except RemoteTaskError as e:
        raise click.BadParameter(str(e), param_hint='--db')
    try:
        dbmod.ensureService(database, service)
        processor = Processor(database, service, concurrency=concurrency,
                              lease=lease)
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
    previous = signal.signal(signal.SIGTERM, _raiseStop)
    try:
        if not no_processing:
            processor.start()
            click.echo('  processing with %d thread(s)' % concurrency)
        sys.stdout.flush()
        server.run()
    except (KeyboardInterrupt, _Stop):
        click.echo('remotetask: stopping')
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.close()
        if processor.running:
            processor.stop()
        database.close()


@click.group()
def user():
    """Manage the users file of ``remotetask serve``."""


_users_option = click.option('--users', 'users_path', metavar='FILE',
                             required=True, type=click.Path(dir_okay=False),
                             help='The users file (created if missing).')


def _password():
    if sys.stdin.isatty():
        return click.prompt('Password', hide_input=True,
                            confirmation_prompt=True)
    line = sys.stdin.readline()
    return line.rstrip('\r\n')


@user.command('add')
@_users_option
@click.argument('name')
@click.option('--role', type=click.Choice(ROLES), required=True)
def addCommand(users_path, name, role):
    """Add (or change) user NAME; the password is asked for, or read from
    the first line of stdin when it is not a terminal."""
    try:
        addUser(users_path, name, _password(), role)
    except UsersFileError as e:
        raise click.ClickException(str(e))
    click.echo('user %r (%s) saved in %s' % (name, role, users_path))


@user.command('token')
@_users_option
@click.argument('name')
def tokenCommand(users_path, name):
    """Make an API token for NAME and print it (only this once)."""
    try:
        tokenid, token = addToken(users_path, name)
    except UsersFileError as e:
        raise click.ClickException(str(e))
    click.echo(token)


@user.command('list')
@_users_option
def listCommand(users_path):
    """List the users and their roles."""
    try:
        users = Users.read(users_path)
    except UsersFileError as e:
        raise click.ClickException(str(e))
    for name, entry in sorted(users.items()):
        click.echo('%s\t%s\t%d token(s)' % (name, entry['role'],
                                            len(entry.get('tokens') or {})))


@user.command('remove')
@_users_option
@click.argument('name')
def removeCommand(users_path, name):
    """Remove user NAME and its tokens."""
    try:
        users = Users.read(users_path)
        if name not in users:
            raise UsersFileError('no user %r in %s' % (name, users_path))
        del users[name]
        Users.write(users_path, users)
    except UsersFileError as e:
        raise click.ClickException(str(e))
    click.echo('user %r removed' % name)

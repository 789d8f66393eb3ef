"""The ``remotetask`` command.

Each subcommand parses and checks its options, then hands off to the module
that does the work (``worker``, ``web``...).  ``main(argv)`` can be called
from tests.
"""
import importlib
import json
import sys

import click

from remotetask import db as dbmod
from remotetask.interfaces import RemoteTaskError


def loadTasks(imports=(), zcml=()):
    """Import the modules and load the ZCML files that register tasks."""
    for name in imports:
        try:
            importlib.import_module(name)
        except Exception as e:      # ImportError, or the module's own error
            raise click.BadParameter(
                'can not import %r: %s' % (name, _errorText(e)),
                param_hint='--import')
    for path in zcml:
        from remotetask import zcml as zcmlmod
        try:
            zcmlmod.loadFile(path)
        except Exception as e:
            raise click.BadParameter('can not load %r: %s' % (path, e),
                                     param_hint='--zcml')


def db_options(func):
    """--db, --service, --import and --zcml, shared by the subcommands."""
    func = click.option('--zcml', 'zcml', multiple=True,
                        type=click.Path(exists=True, dir_okay=False),
                        help='ZCML file registering tasks (repeatable).')(func)
    func = click.option('--import', 'imports', multiple=True,
                        metavar='MODULE',
                        help='Module to import; it registers tasks '
                             '(repeatable).')(func)
    func = click.option('--service', default=dbmod.DEFAULT_SERVICE,
                        show_default=True,
                        help='Key of the service at the database root.')(func)
    func = click.option('--db', 'uri', default=None, metavar='URI',
                        help='zodburi URI (file://, memory://, zeo://host:port,'
                             ' postgres://...) or a FileStorage path '
                             '[default: ./var/Data.fs].')(func)
    return func


def openService(uri, service, imports, zcml):
    """Load the tasks and open the database; return a ServiceRunner."""
    loadTasks(imports, zcml)
    try:
        database = dbmod.openDB(uri)
    except RemoteTaskError as e:
        raise click.BadParameter(str(e), param_hint='--db')
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.call_on_close(database.close)
    return dbmod.ServiceRunner(database, service)


def _errorText(exc):
    text = str(exc)
    if isinstance(exc, ImportError):
        return text
    return '%s: %s' % (type(exc).__name__, text) if text else \
        type(exc).__name__


class _Group(click.Group):
    """Every RemoteTaskError a subcommand lets through (no service of
    that name, a job in the wrong status...) is an error message and exit
    status 1, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except RemoteTaskError as e:
            raise click.ClickException(str(e))


@click.group(cls=_Group)
@click.version_option(package_name='remotetask')
def main():
    """remotetask: a task queue that lives inside the ZODB."""


def _fail(e):
    click.echo('Error: %s' % e, err=True)
    sys.exit(1)


@main.command()
@db_options
def tasks(uri, service, imports, zcml):
    """List the registered tasks."""
    loadTasks(imports, zcml)
    from remotetask.service import TaskService
    for name in sorted(TaskService().getAvailableTasks()):
        click.echo(name)


@main.command()
@db_options
@click.argument('task')
@click.argument('input', required=False)
@click.option('--delay', type=float, help='Seconds before it is due.')
@click.option('--start-later', is_flag=True, help='Wait for "start".')
def add(uri, service, imports, zcml, task, input, delay, start_later):
    """Add a job; INPUT is JSON (default null).  Prints the job id."""
    try:
        value = json.loads(input) if input is not None else None
    except ValueError as e:
        raise click.BadParameter('not JSON: %s' % e, param_hint='INPUT')
    runner = openService(uri, service, imports, zcml)
    try:
        jobid = runner(lambda s: s.add(task, value, startLater=start_later,
                                       delay=delay))
    except RemoteTaskError as e:
        _fail(e)
    click.echo(jobid)


@main.command()
@db_options
@click.argument('jobid', type=int)
def status(uri, service, imports, zcml, jobid):
    """Print a job as JSON."""
    runner = openService(uri, service, imports, zcml)

    def info(s):
        job = s._job(jobid)
        data = job.info()
        data['result'] = _jsonable(job.output)
        data['traceback'] = job.traceback
        return data
    try:
        click.echo(json.dumps(runner(info), indent=2, sort_keys=True))
    except RemoteTaskError as e:
        _fail(e)


def _jsonable(value):
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


@main.command()
@db_options
def counts(uri, service, imports, zcml):
    """Print the number of jobs in each status."""
    runner = openService(uri, service, imports, zcml)
    for status, n in runner(lambda s: s.counts()).items():
        click.echo('%-12s %d' % (status, n))


@main.command()
@db_options
@click.argument('jobid', type=int)
def cancel(uri, service, imports, zcml, jobid):
    """Cancel a waiting job."""
    runner = openService(uri, service, imports, zcml)
    try:
        runner(lambda s: s.cancel(jobid))
    except RemoteTaskError as e:
        _fail(e)


@main.command()
@db_options
@click.option('--status', 'statuses', multiple=True,
              type=click.Choice(['completed', 'error', 'cancelled']),
              help='Status to clean (repeatable) [default: all final].')
def clean(uri, service, imports, zcml, statuses):
    """Remove finished jobs."""
    runner = openService(uri, service, imports, zcml)
    from remotetask.interfaces import CLEANABLE_STATUSES
    before = runner(lambda s: s.count())
    runner(lambda s: s.clean(statuses or CLEANABLE_STATUSES))
    click.echo('removed %d jobs' % (before - runner(lambda s: s.count())))


def run(argv=None):
    """Run the command with ``argv``; return the exit code (for tests)."""
    try:
        main.main(args=argv, prog_name='remotetask', standalone_mode=False)
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except SystemExit as e:
        return e.code
    return 0


import remotetask.worker  # noqa: E402,F401  (adds the worker command to main)
from remotetask.web.serve import serve as _serve; main.add_command(_serve)  # noqa: E402,E702,I001
from remotetask.web.serve import user as _user; main.add_command(_user)  # noqa: E402,E702,I001

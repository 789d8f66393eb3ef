"""Job commands: ``add``, ``status``, ``counts``, ``cancel``, ``clean``."""
import json

import click

from remotetask.cli.common import db_options, fail, openService

#: The statuses ``clean`` removes (``interfaces.CLEANABLE_STATUSES``, a
#: test checks they agree).
CLEANABLE = ('completed', 'error', 'cancelled')


@click.command()
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
    from remotetask.interfaces import RemoteTaskError
    try:
        jobid = runner(lambda s: s.add(task, value, startLater=start_later,
                                       delay=delay))
    except RemoteTaskError as e:
        fail(e)
    click.echo(jobid)


@click.command()
@db_options
@click.argument('jobid', type=int)
def status(uri, service, imports, zcml, jobid):
    """Print a job as JSON."""
    runner = openService(uri, service, imports, zcml)
    from remotetask.interfaces import RemoteTaskError

    def info(s):
        job = s._job(jobid)
        data = job.info()
        data['result'] = _jsonable(job.output)
        data['traceback'] = job.traceback
        return data
    try:
        click.echo(json.dumps(runner(info), indent=2, sort_keys=True))
    except RemoteTaskError as e:
        fail(e)


def _jsonable(value):
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


@click.command()
@db_options
def counts(uri, service, imports, zcml):
    """Print the number of jobs in each status."""
    runner = openService(uri, service, imports, zcml)
    from remotetask import registry

    def read(s):
        return s.counts(), registry.describeUnserved(registry.unserved(s))
    found, warnings = runner(read)
    for name, n in found.items():
        click.echo('%-12s %d' % (name, n))
    for line in warnings:
        click.echo('warning: %s' % line, err=True)


@click.command()
@db_options
@click.argument('jobid', type=int)
def cancel(uri, service, imports, zcml, jobid):
    """Cancel a waiting job."""
    runner = openService(uri, service, imports, zcml)
    from remotetask.interfaces import RemoteTaskError
    try:
        runner(lambda s: s.cancel(jobid))
    except RemoteTaskError as e:
        fail(e)


@click.command()
@db_options
@click.option('--status', 'statuses', multiple=True,
              type=click.Choice(CLEANABLE),
              help='Status to clean (repeatable) [default: all final].')
def clean(uri, service, imports, zcml, statuses):
    """Remove finished jobs."""
    runner = openService(uri, service, imports, zcml)
    before = runner(lambda s: s.count())
    runner(lambda s: s.clean(statuses or CLEANABLE))
    click.echo('removed %d jobs' % (before - runner(lambda s: s.count())))

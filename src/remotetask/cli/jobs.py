"""Job commands: ``add``, ``status``, ``counts``, ``cancel``, ``clean``."""
import json

import click

from remotetask.cli.common import db_options, fail, jobCount, openService

#: The statuses ``clean`` removes (``interfaces.CLEANABLE_STATUSES``, a
#: test checks they agree).
CLEANABLE = ('completed', 'error', 'cancelled')


@click.command()
@db_options
@click.argument('task')
@click.argument('input', required=False)
@click.option('--delay', type=float, help='Seconds before it is due.')
@click.option('--start-later', is_flag=True, help='Wait for "start".')
@click.option('--queue', default='default', show_default=True,
              help='Queue the job waits in.')
@click.option('--priority', type=int, default=0, show_default=True,
              help='Higher runs first among due jobs (-1000 to 1000).')
@click.option('--unique-key', default=None, metavar='KEY',
              help='Add nothing while a job with this key is waiting or '
                   'processing: print its id.')
@click.option('--after', 'after', multiple=True, type=int, metavar='ID',
              help='A job it waits for (repeatable): it is deferred until '
                   'they all completed, cancelled if one fails.')
def add(uri, service, imports, zcml, task, input, delay, start_later, queue,
        priority, unique_key, after):
    """Add a job; INPUT is JSON (default null).  Prints the job id."""
    try:
        value = json.loads(input) if input is not None else None
    except ValueError as e:
        raise click.BadParameter('not JSON: %s' % e, param_hint='INPUT')
    runner = openService(uri, service, imports, zcml, create=True)
    from remotetask.interfaces import RemoteTaskError, UnknownTaskError
    try:
        jobid = runner(lambda s: s.add(task, value, startLater=start_later,
                                       delay=delay, queue=queue,
                                       priority=priority,
                                       unique_key=unique_key,
                                       after=after or None))
    except UnknownTaskError as e:
        fail('%s (a task is known when a live worker of the database runs'
             ' it, or when --import MODULE or --zcml FILE registers it'
             ' here; see "remotetask tasks")' % e)
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
        from remotetask import workflows
        data.update(workflows.describe(s, job))
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
        return (s.counts(), s.pausedCount(),
                registry.describeUnserved(registry.unserved(s)))
    counted, paused, warnings = runner(read)
    for name, n in counted.items():
        click.echo('%-12s %d' % (name, n))
    # Waiting jobs that pauses hold back (they are counted above too).
    click.echo('%-12s %d' % ('paused', paused))
    for line in warnings:
        click.echo('warning: %s' % line, err=True)


@click.command()
@db_options
@click.argument('jobid', type=int)
def cancel(uri, service, imports, zcml, jobid):
    """Cancel a job (a processing one is asked to stop: it ends cancelled
    when its run returns)."""
    runner = openService(uri, service, imports, zcml)
    from remotetask.interfaces import RemoteTaskError

    def cancel(s):
        s.cancel(jobid)
        return s.getStatus(jobid)
    try:
        status = runner(cancel)
    except RemoteTaskError as e:
        fail(e)
    if status == 'processing':
        click.echo('job %d is processing: asked to stop' % jobid)


@click.command()
@db_options
@click.option('--status', 'statuses', multiple=True,
              type=click.Choice(CLEANABLE),
              help='Status to clean (repeatable) [default: all final].')
@click.option('--older-than', 'older_than', metavar='SECONDS',
              type=click.FloatRange(min=0), default=None,
              help='Only jobs that ended more than SECONDS ago.')
def clean(uri, service, imports, zcml, statuses, older_than):
    """Remove finished jobs, oldest first, in small transactions (it may
    run while workers do; the retention of the service does the same by
    itself: see the README's "Operations")."""
    import time

    from remotetask import retention
    runner = openService(uri, service, imports, zcml)
    before = None if older_than is None else time.time() - older_than
    cursors, removed = None, 0
    while True:
        # One bounded step per transaction (a conflict retries the step).
        step, cursors, more = runner(
            lambda s: retention.clean(s, statuses or CLEANABLE, before,
                                      limit=retention.BATCH,
                                      scan=retention.SCAN, cursors=cursors))
        removed += len(step)
        if not more:
            break
    click.echo('removed %s' % jobCount(removed))

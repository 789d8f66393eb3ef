"""Routing and flow control commands: ``queues``, ``pause``, ``resume``,
``retry``, ``purge``, ``delete`` (see ``remotetask.routing``).

The bulk actions (``retry --all``, ``purge``, ``delete``, and their
``--dry-run`` counts) run in bounded steps, one transaction each
(``remotetask.bulk.run``): a conflict with a worker retries one step."""
import time

import click

from remotetask.cli.common import db_options, fail, jobCount, openService

#: Every status (``interfaces.STATUSES``; not imported here: it loads
#: zope.schema).
STATUSES = ('start later', 'deferred', 'queued', 'delayed', 'cronjob', 'processing',
            'completed', 'error', 'cancelled')


def _filters(func):
    func = click.option('--task', default=None, metavar='T',
                        help='Only jobs of this task.')(func)
    func = click.option('--queue', default=None, metavar='Q',
                        help='Only jobs of this queue.')(func)
    return func


def _run(runner, func):
    from remotetask.interfaces import RemoteTaskError
    try:
        return runner(func)
    except RemoteTaskError as e:
        fail(e)


def _steps(runner, action, **kw):
    """Run the bulk ``action`` in bounded steps, one transaction each;
    return how many jobs it acted on (counted, with ``dry_run``)."""
    from remotetask import bulk
    from remotetask.interfaces import RemoteTaskError
    try:
        return bulk.run(runner, bulk.STEPS[action], **kw)
    except RemoteTaskError as e:
        fail(e)


def _what(queue, task):
    parts = []
    if queue is not None:
        parts.append('queue %r' % queue)
    if task is not None:
        parts.append('task %r' % task)
    return ' and '.join(parts) or 'everything'


@click.command()
@db_options
def queues(uri, service, imports, zcml):
    """List the queues: waiting, processing, paused, oldest due age."""
    runner = openService(uri, service, imports, zcml)
    found, pauses = _run(runner, lambda s: (s.queues(), s.paused()))
    click.echo('%-20s %9s %11s %7s %12s  %s' % (
        'queue', 'waiting', 'processing', 'paused', 'oldest age',
        'priorities'))
    for q in found:
        age = q['oldest_age']
        click.echo('%-20s %9d %11d %7s %12s  %s' % (
            q['queue'], q['waiting'], q['processing'],
            'yes' if q['paused'] else 'no',
            '-' if age is None else '%.1fs' % age,
            ' '.join(map(str, q['priorities'])) or '-'))
    for p in pauses:
        if p['task'] is not None or p['queue'] is None:
            click.echo('paused: %s' % _what(p['queue'], p['task']))


@click.command()
@db_options
@_filters
def pause(uri, service, imports, zcml, queue, task):
    """Stop claiming jobs of a queue, a task, or (neither) everything.
    Running jobs finish."""
    # Pausing ahead of any job (before a deployment, say) is a use: pause
    # creates the database as add does.
    from remotetask import routing
    runner = openService(uri, service, imports, zcml, create=True)
    paused, known = _run(runner, lambda s: (
        s.pause(queue=queue, task=task),
        queue is None or queue in routing.queueNames(s)))
    if paused:
        click.echo('paused %s' % _what(queue, task))
    else:
        click.echo('%s was paused already' % _what(queue, task))
    if not known:
        # Most often a typing mistake; the pause holds the queue's jobs
        # when some come, so it is kept.
        click.echo('note: no job has used queue %r yet (see "remotetask '
                   'queues"); its jobs will be held when they come' % queue,
                   err=True)


@click.command()
@db_options
@_filters
def resume(uri, service, imports, zcml, queue, task):
    """Remove the pauses that match (neither option: every pause)."""
    runner = openService(uri, service, imports, zcml)
    n = _run(runner, lambda s: s.resume(queue=queue, task=task))
    click.echo('removed %d pause%s' % (n, '' if n == 1 else 's'))


@click.command()
@db_options
@click.argument('jobid', type=int, required=False)
@click.option('--all', 'everything', is_flag=True,
              help='Retry every job that ended "error" (of --task and '
                   '--queue if given).')
@_filters
@click.option('--dry-run', is_flag=True, help='Only say how many.')
def retry(uri, service, imports, zcml, jobid, everything, queue, task,
          dry_run):
    """Queue again job JOBID (error or cancelled), or with --all every
    failed job."""
    if everything == (jobid is not None):
        raise click.UsageError('give either a JOBID or --all')
    if jobid is not None and (queue or task or dry_run):
        raise click.UsageError('--queue, --task and --dry-run go with --all')
    runner = openService(uri, service, imports, zcml)
    if jobid is not None:
        _run(runner, lambda s: s.retry(jobid))
        click.echo('queued job %d again' % jobid)
        return
    n = _steps(runner, 'retry', queue=queue, task=task, dry_run=dry_run)
    click.echo('%s %d failed job%s of %s' % (
        'would queue again' if dry_run else 'queued again', n,
        '' if n == 1 else 's', _what(queue, task)))


def _confirm(n, message, yes):
    if n and not yes:
        click.confirm(message % n, abort=True)
    return n


@click.command()
@db_options
@_filters
@click.option('--dry-run', is_flag=True, help='Only say how many.')
@click.option('--yes', '-y', is_flag=True, help='Do not ask.')
def purge(uri, service, imports, zcml, queue, task, dry_run, yes):
    """Cancel every queued, delayed, start-later and deferred job (of
    --queue and --task).  Cron jobs stay (cancel them by id)."""
    runner = openService(uri, service, imports, zcml)
    n = _steps(runner, 'purge', queue=queue, task=task, dry_run=True)
    if dry_run:
        click.echo('would cancel %d waiting jobs of %s'
                   % (n, _what(queue, task)))
        return
    _confirm(n, 'Cancel %%d waiting jobs of %s?' % _what(queue, task), yes)
    n = _steps(runner, 'purge', queue=queue, task=task)
    click.echo('cancelled %d waiting jobs of %s' % (n, _what(queue, task)))


@click.command()
@db_options
@click.option('--status', 'statuses', multiple=True,
              type=click.Choice([s for s in STATUSES if s != 'processing']),
              help='Only jobs in this status (repeatable) [default: every '
                   'status but processing].')
@_filters
@click.option('--older-than', type=click.FloatRange(min=0), default=None,
              metavar='SECONDS',
              help='Only jobs created or ended more than SECONDS ago.')
@click.option('--dry-run', is_flag=True, help='Only say how many.')
@click.option('--yes', '-y', is_flag=True, help='Do not ask.')
def delete(uri, service, imports, zcml, statuses, queue, task, older_than,
           dry_run, yes):
    """Delete the jobs that match (never processing ones)."""
    runner = openService(uri, service, imports, zcml)
    before = None if older_than is None else time.time() - older_than
    status = list(statuses) or None

    kw = dict(status=status, queue=queue, task=task, before=before)
    n = _steps(runner, 'delete', dry_run=True, **kw)
    if dry_run:
        click.echo('would delete %s' % jobCount(n))
        return
    _confirm(n, 'Delete %d jobs?', yes)
    n = _steps(runner, 'delete', **kw)
    click.echo('deleted %s' % jobCount(n))

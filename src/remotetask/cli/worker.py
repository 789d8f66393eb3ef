"""``remotetask worker``: a processor in a process of its own."""
import logging
import os
import sys

import click

from remotetask.cli.common import (
    DEFAULT_CONCURRENCY, closeDatabase, configureLogging, db_options,
    errorText, loadTasks, openDatabase)

log = logging.getLogger('remotetask.worker')

#: Modules every worker imports (registering their tasks).
BUILT_IN = ('remotetask.tracker',)

#: ``remotetask.db.WORKER_CACHE_SIZE`` (not imported here: that module
#: loads the ZODB; a test checks they agree).
WORKER_CACHE_SIZE = 2000


def cacheSize(uri, option):
    """The connection cache size of a worker: ``--cache-size``, else the
    URI's ``connection_cache_size``, else ``WORKER_CACHE_SIZE``."""
    if option is not None:
        return option
    from remotetask import db as dbmod
    given = dbmod.uriCacheSize(uri)
    if given is not None:
        try:
            return int(given)
        except ValueError:
            raise click.BadParameter('connection_cache_size=%r is not a '
                                     'whole number' % given,
                                     param_hint='--db')
    return dbmod.WORKER_CACHE_SIZE


class BatchSize(click.ParamType):
    """``--batch``: ``auto`` or a whole number >= 1."""

    name = 'auto|N'

    def convert(self, value, param, ctx):
        if value == 'auto' or isinstance(value, int):
            return value
        try:
            number = int(value)
        except ValueError:
            number = 0
        if number < 1:
            self.fail("%r is neither 'auto' nor a whole number >= 1" % value,
                      param, ctx)
        return number


@click.command()
@db_options
@click.option('--concurrency', type=click.IntRange(min=1),
              default=DEFAULT_CONCURRENCY, show_default=True,
              help='Jobs run at once (one thread each).')
@click.option('--lease', type=click.FloatRange(min=0, min_open=True),
              default=30.0, show_default=True,
              help='Seconds a claim lasts unless renewed; a job whose worker '
                   'died goes back to the queue after it.')
@click.option('--grace', type=click.FloatRange(min=0), default=30.0,
              show_default=True,
              help='Seconds running jobs get to finish after SIGTERM/SIGINT '
                   '(a second signal exits at once).')
@click.option('--batch', type=BatchSize(), default='auto', show_default=True,
              help="Jobs claimed per transaction: 'auto' claims about 0.1 s "
                   "of work as judged by the recent jobs (1 to 50), N claims "
                   "up to N (1: strictly one at a time).")
@click.option('--poll-interval', type=click.FloatRange(min=0, min_open=True),
              default=1.0, show_default=True,
              help='Longest idle wait before looking for jobs again.')
@click.option('--maintenance-interval',
              type=click.FloatRange(min=0, min_open=True), default=5.0,
              show_default=True,
              help='Seconds between reaps of expired leases (maintain()).')
@click.option('--queue', 'queues', multiple=True, metavar='NAME',
              help='Take jobs from this queue only (repeatable: the first '
                   'named is drained before the next) [default: every '
                   'queue, higher priorities first].')
@click.option('--worker-id', default=None,
              help='Name recorded on the jobs [default: host:pid].')
@click.option('--log-level', default='INFO', show_default=True,
              type=click.Choice(['DEBUG', 'INFO', 'WARNING', 'ERROR']))
@click.option('--pack-interval', type=click.FloatRange(min=0),
              default=86400.0, show_default=True, metavar='SECONDS',
              help='Pack the database this often, in the background, when '
                   'this worker holds its FileStorage (0: never).')
@click.option('--processes', type=click.IntRange(min=1), default=None,
              metavar='N',
              help='Run jobs in N supervised child processes (each with '
                   '--concurrency threads) instead of in this one: a child '
                   'can be killed, a thread can not.')
@click.option('--kill-after', type=click.FloatRange(min=0), default=5.0,
              show_default=True, metavar='SECONDS',
              help='With --processes: kill (SIGKILL) and replace a child '
                   'whose job still runs this long past its time limit.')
@click.option('--max-jobs-per-child', type=click.IntRange(min=1),
              default=None, metavar='N',
              help='With --processes: replace a child after N jobs (it '
                   'finishes its running jobs first).')
@click.option('--max-memory-per-child', type=click.FloatRange(
              min=0, min_open=True), default=None, metavar='MB',
              help='With --processes: replace a child whose resident memory '
                   'passed MB (it finishes its running jobs first).')
@click.option('--cache-size', type=click.IntRange(min=1), default=None,
              metavar='OBJECTS',
              help='Objects each of its database connections (one per '
                   'thread, one for the clock) keeps in memory '
                   '[default: the URI\'s connection_cache_size, else %d].'
                   % WORKER_CACHE_SIZE)
@click.option('--child-status', default=None, hidden=True)
def worker(uri, service, imports, zcml, concurrency, lease, grace, batch,
           poll_interval, maintenance_interval, queues, worker_id,
           log_level, pack_interval, processes, kill_after,
           max_jobs_per_child, max_memory_per_child, cache_size,
           child_status):
    """Run the service's jobs until SIGTERM or SIGINT.

    The service is at the database root under --service (created there if
    missing).  Several workers may serve one service over ZEO or RelStorage.
    """
    configureLogging(log_level)
    # The tracker's task is built into every worker (the ATP daemon).
    loadTasks(BUILT_IN + tuple(imports), zcml)
    if processes is not None:
        ctx = click.get_current_context()
        return supervise(ctx, uri, service, processes, kill_after, grace,
                         max_jobs_per_child, max_memory_per_child)
    for name, value in (('--max-jobs-per-child', max_jobs_per_child),
                        ('--max-memory-per-child', max_memory_per_child)):
        if value is not None and child_status is None:
            raise click.UsageError('%s needs --processes' % name)
    # Each thread has a connection, and one more for its progress reports;
    # the clock, hand-backs and id blocks one each.
    # A FileStorage is served to the other local processes from right
    # after the processor started (SharedDB.share, docs/startup.md).
    database = openDatabase(uri, share='later',
                            pool_size=2 * concurrency + 3,
                            cache_size=cacheSize(uri, cache_size))
    from remotetask import db as dbmod
    from remotetask.interfaces import RemoteTaskError
    from remotetask.processor import Processor, taskNames
    from remotetask.worker import serve
    try:
        dbmod.ensureService(database, service)
        processor = Processor(
            database, service, concurrency=concurrency, lease=lease,
            worker_id=worker_id, batch=batch, poll_interval=poll_interval,
            maintenance_interval=maintenance_interval, grace=grace,
            queues=queues or None, kind='worker')
        names = sorted(taskNames())
        if not names:
            log.warning('no tasks are registered: give --import or --zcml')
        elif names == ['remotetask.tracker'] and not (imports or zcml):
            log.info('only the tracker task is registered (the ATP daemon); '
                     'give --import or --zcml for tasks of your own')
        log.info('worker %s serving %r of %s; tasks: %s; queues: %s',
                 processor.worker_id, service, dbmod.normalizeURI(uri),
                 ', '.join(names) or 'none',
                 ', '.join(queues) if queues else 'all')
        from remotetask.packing import startPacker
        packer = startPacker(database, pack_interval)
        if os.environ.get('REMOTETASK_TRACEMALLOC'):
            # Memory snapshots on SIGUSR1 (remotetask.memtrace), for
            # bench/soak.py; nothing is imported unless asked.
            from remotetask import memtrace
            try:
                memtrace.installFromEnvironment(database)
            except ValueError as e:
                raise click.UsageError(str(e))
        monitor = None
        if child_status is not None:
            from remotetask.supervisor import ChildMonitor
            monitor = ChildMonitor(processor, child_status,
                                   max_jobs_per_child,
                                   max_memory_per_child).start()
        try:
            code = serve(processor, grace, started=lambda: shareDatabase(
                database, uri))
        finally:
            if packer is not None:
                packer.stop(0)
            if monitor is not None:
                monitor.stop()
    except RemoteTaskError as e:
        database.close()
        if 'queue' in str(e):
            raise click.BadParameter(str(e), param_hint='--queue')
        raise click.ClickException(str(e))
    if processor.running:
        # A task ignored the stop: its thread can not be joined; leave
        # without waiting for it (the job was handed back).
        logging.shutdown()
        os._exit(code)
    closeDatabase(database)
    log.info('worker %s exits with status %d', processor.worker_id, code)
    sys.exit(code)


def shareDatabase(database, uri):
    """Start the embedded ZEO server of a FileStorage this worker holds
    (``remotetask.embedded.SharedDB.share``); one clear line if it can not
    start."""
    share = getattr(database, 'share', None)
    if share is None:       # not a FileStorage this process holds
        return
    try:
        share()
    except Exception as e:
        from remotetask import db as dbmod
        raise RuntimeError('can not share the database %s with the local '
                           'processes: %s' % (dbmod.normalizeURI(uri),
                                              errorText(e))) from e


#: Options of the worker command a supervised child gets as they were given.
CHILD_OPTIONS = ('service', 'concurrency', 'lease', 'grace', 'batch',
                 'poll_interval', 'maintenance_interval', 'log_level',
                 'max_jobs_per_child', 'max_memory_per_child', 'cache_size')


def supervise(ctx, uri, service, processes, kill_after, grace, max_jobs,
              max_memory):
    """``--processes N``: run and supervise N children
    (``remotetask.supervisor``)."""
    from remotetask import db as dbmod
    from remotetask import supervisor
    from remotetask.packing import holdsFile
    # A FileStorage: this process serves it to its children (and to the
    # other local processes: remotetask.embedded).
    database = openDatabase(uri, share=True, pool_size=2)
    if holdsFile(database) and getattr(database, 'embedded', None) is None:
        closeDatabase(database)
        raise click.BadParameter(
            '--processes needs a database several processes can open: a '
            'FileStorage is opened by one process at a time; use ZEO '
            '(zeo://) or RelStorage (postgres://)', param_hint='--db')
    dbmod.ensureService(database, service)
    base = ['worker']
    if uri is not None:
        base += ['--db', uri]
    for name in ctx.params.get('imports') or ():
        base += ['--import', name]
    for path in ctx.params.get('zcml') or ():
        base += ['--zcml', path]
    for name in ctx.params.get('queues') or ():
        base += ['--queue', name]
    for name in CHILD_OPTIONS:
        value = ctx.params.get(name)
        if value is not None:
            base += ['--' + name.replace('_', '-'), str(value)]
    base += ['--pack-interval', '0']
    runner = dbmod.ServiceRunner(database, service)
    boss = supervisor.Supervisor(
        lambda path: supervisor.childCommand(base, path), processes, runner,
        kill_after=kill_after, grace=grace)
    log.info('worker supervisor %d: %d process(es), kill after %gs past a '
             'time limit', os.getpid(), processes, kill_after)
    try:
        code = boss.run()
    finally:
        closeDatabase(database)
    sys.exit(code)

"""The ``remotetask worker`` command: a processor in a process of its own.

``serve(processor)`` is the signal-handling loop, callable in-process (from
the main thread) by tests: it runs the processor until SIGTERM or SIGINT,
then stops it gracefully (stop claiming, let running jobs finish within the
grace period, hand back the rest) and returns 0.  A second signal exits at
once with status 128 + the signal number.
"""
import logging
import os
import signal
import sys
import threading

import click

from remotetask import cli
from remotetask import db as dbmod
from remotetask.interfaces import RemoteTaskError
from remotetask.processor import Processor
from remotetask.threads import errorText

log = logging.getLogger('remotetask.worker')

SIGNALS = (signal.SIGTERM, signal.SIGINT)


def serve(processor, grace=None, signals=SIGNALS, hardExit=os._exit,
          ready=None):
    """Run ``processor`` until one of ``signals`` arrives; return the exit
    status (0 after a graceful stop, 1 if the processor died by itself).

    ``grace``: seconds running jobs get to finish (default: the
    processor's).  A second signal calls ``hardExit(128 + signum)`` (by
    default ``os._exit``: no clean-up; the jobs still running are reaped
    once their leases expire).  ``ready`` (a ``threading.Event``) is set
    once the handlers are installed and the processor runs.  Must be called
    from the main thread (Python delivers signals there only).
    """
    received = []
    stop = threading.Event()

    def handler(signum, frame):
        received.append(signum)
        name = signal.Signals(signum).name
        if len(received) > 1:
            log.warning('second signal (%s): exiting at once', name)
            hardExit(128 + signum)
            return
        log.warning('%s received: no more jobs are claimed; running jobs '
                    'get %gs to finish (send it again to exit at once)', name,
                    processor.grace if grace is None else grace)
        stop.set()

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        processor.start()
        if ready is not None:
            ready.set()
        while not stop.wait(0.2):
            if not processor.running:
                log.error('the processor stopped by itself')
                processor.stop(0)
                return 1
        handed = processor.stop(grace)
        if handed:
            log.warning('handed back jobs %s', ', '.join(map(str, handed)))
        return 0
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


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


def _configureLogging(level):
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(
            stream=sys.stderr, level=level,
            format='%(asctime)s %(levelname)s [%(name)s] %(message)s')
    else:
        root.setLevel(level)


@click.command()
@cli.db_options
@click.option('--concurrency', type=click.IntRange(min=1), default=1,
              show_default=True, help='Jobs run at once (one thread each).')
@click.option('--lease', type=click.FloatRange(min=0, min_open=True),
              default=30.0, show_default=True,
              help='Seconds a claim lasts unless renewed; a job whose worker '
                   'died goes back to the queue after it.')
@click.option('--grace', type=click.FloatRange(min=0), default=30.0,
              show_default=True,
              help='Seconds running jobs get to finish after SIGTERM/SIGINT.')
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
@click.option('--worker-id', default=None,
              help='Name recorded on the jobs [default: host:pid].')
@click.option('--log-level', default='INFO', show_default=True,
              type=click.Choice(['DEBUG', 'INFO', 'WARNING', 'ERROR']))
def worker(uri, service, imports, zcml, concurrency, lease, grace, batch,
           poll_interval, maintenance_interval, worker_id, log_level):
    """Run the service's jobs until SIGTERM or SIGINT.

    The service is at the database root under --service (created there if
    missing).  Several workers may serve one service over ZEO or RelStorage.
    """
    _configureLogging(log_level)
    cli.loadTasks(imports, zcml)
    try:
        # Each thread has a connection, and one more for its progress
        # reports; the clock, hand-backs and id blocks one each.
        database = dbmod.openDB(uri, pool_size=2 * concurrency + 3)
    except RemoteTaskError as e:
        raise click.BadParameter(str(e), param_hint='--db')
    except Exception as e:      # locked FileStorage, unreadable file...
        raise click.ClickException('can not open the database %s: %s' % (
            dbmod.normalizeURI(uri), errorText(e)))
    try:
        dbmod.ensureService(database, service)
        processor = Processor(
            database, service, concurrency=concurrency, lease=lease,
            worker_id=worker_id, batch=batch, poll_interval=poll_interval,
            maintenance_interval=maintenance_interval, grace=grace)
        from remotetask.service import TaskService
        tasks = sorted(TaskService().getAvailableTasks())
        if not tasks:
            log.warning('no tasks are registered: give --import or --zcml')
        log.info('worker %s serving %r of %s; tasks: %s', processor.worker_id,
                 service, dbmod.normalizeURI(uri), ', '.join(tasks) or 'none')
        code = serve(processor, grace)
    except RemoteTaskError as e:
        database.close()
        raise click.ClickException(str(e))
    if processor.running:
        # A task ignored the stop: its thread can not be joined; leave
        # without waiting for it (the job was handed back).
        logging.shutdown()
        os._exit(code)
    database.close()
    log.info('worker %s exits with status %d', processor.worker_id, code)
    sys.exit(code)


# Registered here rather than in cli.py, so that importing either module
# first works (cli.py imports this module at its end).
cli.main.add_command(worker)

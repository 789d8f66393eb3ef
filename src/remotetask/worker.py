"""A processor in a process of its own: the loop of ``remotetask worker``
(the command is in ``remotetask.cli.worker``).

``serve(processor)`` is the signal-handling loop, callable in-process (from
the main thread) by tests: it runs the processor until SIGTERM or SIGINT,
then stops it gracefully (stop claiming, let running jobs finish within the
grace period, hand back the rest) and returns 0.  A second signal exits at
once with status 128 + the signal number.
"""
import logging
import os
import signal
import threading

from remotetask import startup
from remotetask.lifecycle import twoStageSignals

log = logging.getLogger('remotetask.worker')

SIGNALS = (signal.SIGTERM, signal.SIGINT)


def serve(processor, grace=None, signals=SIGNALS, hardExit=os._exit,
          ready=None, started=None):
    """Run ``processor`` until one of ``signals`` arrives; return the exit
    status (0 after a graceful stop, 1 if the processor died by itself).

    ``grace``: seconds running jobs get to finish (default: the
    processor's).  A second signal calls ``hardExit(128 + signum)`` (by
    default ``os._exit``: no clean-up; the jobs still running are reaped
    once their leases expire).  ``ready`` (a ``threading.Event``) is set
    once the handlers are installed and the processor runs.  ``started``
    (a callable) is called once the processor runs: what can wait until the
    jobs are being claimed (the command's embedded ZEO server); if it
    raises, the processor stops and the status is 1.  Must be called from
    the main thread (Python delivers signals there only).
    """
    stop = threading.Event()

    def first(name):
        log.warning('%s received: no more jobs are claimed; running jobs '
                    'get %gs to finish (send it again to exit at once)', name,
                    processor.grace if grace is None else grace)
        stop.set()

    previous = twoStageSignals(signals, first, hardExit)
    try:
        processor.start()
        if started is not None:
            try:
                started()
            except Exception as e:
                log.error('%s; stopping', e)
                processor.stop(0)
                return 1
        # The worker's start-up is done (a no-op unless this is the
        # remotetask program: remotetask.startup).
        startup.ready()
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


"""Stopping an application's processors with the application.

Frameworks have no common "process stopping" event: a WSGI server killed
by SIGTERM (what process managers send) dies at once, and its processors'
running jobs wait for their leases to expire.  ``stopOnSigterm()`` makes
SIGTERM raise ``Terminated`` (a ``SystemExit`` with exit code 0) in the
main thread instead, if nothing else handles SIGTERM: the server leaves
its loop as on Ctrl-C, ``finally`` blocks and ``atexit`` handlers run, and
the processors stop with their grace period.  A second SIGTERM kills as
usual.  Used by ``remotetask.zope`` and ``remotetask.pyramid``.
"""
import atexit
import logging
import signal
import threading

log = logging.getLogger('remotetask.worker')

_lock = threading.Lock()
_registered = []


class Terminated(SystemExit):
    """Raised in the main thread on SIGTERM (see the module)."""

    def __init__(self):
        super().__init__(0)

    def __str__(self):
        return 'on SIGTERM'


def _onSigterm(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_DFL)   # a second one kills
    log.info('SIGTERM: shutting down (stopping the processors first)')
    raise Terminated()


def stopOnSigterm():
    """Install the SIGTERM handler (see the module); True if it is in
    place.  Only the main thread can, and only while SIGTERM has its
    default action (a server or process manager that handles it is left
    alone)."""
    if threading.current_thread() is not threading.main_thread():
        return False
    current = signal.getsignal(signal.SIGTERM)
    if current is _onSigterm:
        return True
    if current != signal.SIG_DFL:
        return False
    signal.signal(signal.SIGTERM, _onSigterm)
    return True


def twoStageSignals(signals, first, hardExit, logger=log):
    """Install one handler for each of ``signals``; return the previous
    handlers.  The first signal calls ``first(name)`` (which may raise to
    leave a loop); any later one calls ``hardExit(128 + signum)`` at once
    (no clean-up: the jobs still running are handed back when their leases
    expire); ``logger`` says so.  Shared by ``remotetask worker`` and
    ``remotetask serve``."""
    received = []

    def handler(signum, frame):
        received.append(signum)
        name = signal.Signals(signum).name
        if len(received) > 1:
            logger.warning('second signal (%s): exiting at once', name)
            hardExit(128 + signum)
            return
        first(name)

    return {s: signal.signal(s, handler) for s in signals}


def atExit(func):
    """Register ``func`` with ``atexit`` once."""
    with _lock:
        if func not in _registered:
            _registered.append(func)
            atexit.register(func)

"""Tasks of the uptime tests, also in worker processes (``remotetask
worker --import remotetask.tests.uptimetasks``).

- ``noop``: returns its input.
- ``spin``: a busy loop of ``input['seconds']`` that never looks at
  ``cancelled`` (a hung C call, as far as the worker can tell); logs
  ``start JOBID PID`` to ``input['log']``.
- ``untilcancelled``: logs ``start JOBID PID``, waits until its job is
  cancelled (or ``input['seconds']`` pass), logs ``end JOBID PID``.
- ``sendmail`` (``grouped=False``) and ``grouped`` (the default policy):
  log ``start JOBID PID``, wait ``input['seconds']`` (or until the file
  ``input['until']`` exists), log ``end JOBID PID`` and return the job id:
  a task with an effect outside the ZODB (the crash window of grouped
  commits: bench/crashwindow.py, test_uptime_grouped.py).
"""
import os
import time

import zope.component

from remotetask.job import currentJob
from remotetask.tests.processingtasks import logLine  # noqa: F401
from remotetask.task import SimpleTask, TaskBase


def readLog(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.split() for line in f if line.strip()]


def noop(input):
    return input


class Spin(TaskBase):
    def __call__(self, service, jobid, input):
        logLine(input['log'], 'start', jobid, os.getpid())
        deadline = time.monotonic() + input.get('seconds', 3600)
        n = 0
        while time.monotonic() < deadline:
            n += 1          # ignores cancelled: only a kill stops it
        return n


class UntilCancelled(TaskBase):
    def __call__(self, service, jobid, input):
        logLine(input['log'], 'start', jobid, os.getpid())
        context = currentJob()
        deadline = time.monotonic() + input.get('seconds', 3600)
        while time.monotonic() < deadline and not context.cancelled:
            time.sleep(0.02)
        logLine(input['log'], 'end', jobid, os.getpid())
        return 'stopped'


class Effect(TaskBase):
    def __call__(self, service, jobid, input):
        logLine(input['log'], 'start', jobid, os.getpid())
        deadline = time.monotonic() + input.get('seconds', 0)
        until = input.get('until')
        while time.monotonic() < deadline:
            if until is not None and os.path.exists(until):
                break
            time.sleep(min(0.02, max(0.0, deadline - time.monotonic())))
        logLine(input['log'], 'end', jobid, os.getpid())
        return jobid


def register():
    zope.component.provideUtility(SimpleTask(noop), name='noop')
    zope.component.provideUtility(Spin(), name='spin')
    zope.component.provideUtility(UntilCancelled(), name='untilcancelled')
    zope.component.provideUtility(Effect(grouped=False), name='sendmail')
    zope.component.provideUtility(Effect(), name='grouped')


register()

"""Tasks of the uptime tests, also in worker processes (``remotetask
worker --import remotetask.tests.uptimetasks``).

- ``noop``: returns its input.
- ``spin``: a busy loop of ``input['seconds']`` that never looks at
  ``cancelled`` (a hung C call, as far as the worker can tell); logs
  ``start JOBID PID`` to ``input['log']``.
- ``untilcancelled``: logs ``start JOBID PID``, waits until its job is
  cancelled (or ``input['seconds']`` pass), logs ``end JOBID PID``.
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


def register():
    zope.component.provideUtility(SimpleTask(noop), name='noop')
    zope.component.provideUtility(Spin(), name='spin')
    zope.component.provideUtility(UntilCancelled(), name='untilcancelled')


register()

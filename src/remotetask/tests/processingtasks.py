"""Tasks used by the processing tests, also in worker processes
(``remotetask worker --import remotetask.tests.processingtasks``).

``record`` writes its input durably in the job's own transaction (an
``OOBTree`` at ``root['records_' + service name]`` counting how often each
input was committed) and, to see every run even when it was not committed, appends a
line ``start|end JOBID PID CLAIM N`` to the file named in its input.
"""
import os
import time

import zope.component
from BTrees.OOBTree import OOBTree

from remotetask.job import currentJob
from remotetask.task import TaskBase


def logLine(path, *fields):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (' '.join(str(f) for f in fields) + '\n').encode())
    finally:
        os.close(fd)


def readLog(path):
    """The lines of a log as tuples (event, jobid, pid, claim, n)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [tuple(int(v) if v.isdigit() else v for v in line.split())
                for line in f if line.strip()]


def records(conn, service='tasks'):
    """The records of the tasks of ``service`` (a name), created if
    missing."""
    root = conn.root()
    key = 'records_' + service
    if key not in root:
        root[key] = OOBTree()
    return root[key]


class RecordTask(TaskBase):
    """input: {'n': int, 'log': path, 'sleep': seconds (optional),
    'until': path (optional: the sleep ends early once that file exists)}.
    """

    def __call__(self, service, jobid, input):
        claim = service.jobs[jobid].attempt_count
        n = input['n']
        logLine(input['log'], 'start', jobid, os.getpid(), claim, n)
        context = currentJob()
        deadline = time.monotonic() + input.get('sleep', 0)
        until = input.get('until')
        while time.monotonic() < deadline:
            if context is not None and context.cancelled:
                break
            if until is not None and os.path.exists(until):
                break
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        done = records(service._p_jar, service.__name__)
        done[n] = done.get(n, 0) + 1
        logLine(input['log'], 'end', jobid, os.getpid(), claim, n)
        return n


def register():
    zope.component.provideUtility(RecordTask(), name='record')


register()

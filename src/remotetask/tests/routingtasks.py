"""Tasks of the routing tests, also run in worker processes
(``remotetask worker --import remotetask.tests.routingtasks``).

Each logs ``start|end JOBID PID TIME LABEL`` to the file named in its
input (``{'log': path, 'label': str, 'sleep': seconds}``), outside the
database, so a test sees every run, when it started and ended, and where.
"""
import os
import time

import zope.component

from remotetask.tests.processingtasks import logLine  # noqa: F401
from remotetask.task import TaskBase


def readLog(path):
    """``[(event, jobid, pid, time, label)]`` in the order written."""
    if not os.path.exists(path):
        return []
    found = []
    with open(path) as f:
        for line in f:
            if line.strip():
                event, jobid, pid, when, label = line.split()
                found.append((event, int(jobid), int(pid), float(when),
                              label))
    return found


class Logged(TaskBase):

    def __call__(self, service, jobid, input):
        path = input['log']
        logLine(path, 'start', jobid, os.getpid(), repr(time.time()),
                input['label'])
        time.sleep(input.get('sleep', 0))
        logLine(path, 'end', jobid, os.getpid(), repr(time.time()),
                input['label'])
        return input['label']


def register():
    zope.component.provideUtility(Logged(), name='logged')
    zope.component.provideUtility(Logged(concurrency=1), name='single')
    zope.component.provideUtility(Logged(rate_limit='5/s'), name='limited')


register()


def addUnique(uri, name, key, workdir, index, processes):
    """One of ``processes`` producers adding a job with unique ``key``:
    each adds in its transaction, then waits until every producer has
    added (files ``added-N`` in ``workdir``) before committing, so that
    all the transactions overlap.  Prints ``jobid conflicts``."""
    import transaction
    from transaction.interfaces import TransientError

    from remotetask import db as dbmod
    database = dbmod.openDB(uri)
    tm = transaction.TransactionManager()
    conn = database.open(tm)
    conflicts = 0
    try:
        for attempt in range(20):
            try:
                tm.begin()
                service = dbmod.getService(conn, name, create=False)
                jobid = service.add('logged', {'log': os.devnull,
                                               'label': 'u'},
                                    unique_key=key)
                if attempt == 0:
                    open(os.path.join(workdir, 'added-%d' % index),
                         'w').close()
                    deadline = time.monotonic() + 60
                    while not all(os.path.exists(os.path.join(
                            workdir, 'added-%d' % i))
                            for i in range(processes)):
                        if time.monotonic() > deadline:
                            raise RuntimeError('the others never added')
                        time.sleep(0.01)
                tm.commit()
                break
            except TransientError:
                tm.abort()
                conflicts += 1
        print(jobid, conflicts)
    finally:
        tm.abort()
        conn.close()
        database.close()


if __name__ == '__main__':
    import sys
    if sys.argv[1] == 'add-unique':
        uri, name, key, workdir, index, processes = sys.argv[2:8]
        addUnique(uri, name, key, workdir, int(index), int(processes))

"""Producer and worker processes for the concurrency tests and the bench.

Importing this module registers the task ``scale.record``: it appends
``<jobid> <pid>`` to the file named by ``$REMOTETASK_SCALE_LOG`` (one
``write`` on an ``O_APPEND`` file, so lines of concurrent processes do not
mix) and returns its input.  The log shows every execution, including
those of a transaction that was then retried.

Run as a script::

    python -m remotetask.tests.scale_agents produce URI COUNT TAG STATSFILE
    python -m remotetask.tests.scale_agents work URI STATSFILE [IDLE]
    python -m remotetask.tests.scale_agents process URI STATSFILE [LEASE
                                                      [BATCH|auto]]

``produce`` adds COUNT jobs, one per transaction, with
``remotetask.retry.attempts`` (conflicts retried, outages waited out); a
ConflictError that reached it would end the process with status 2.
``process`` runs the real ``remotetask.processor.Processor`` (one thread,
polling every ``$REMOTETASK_POLL`` seconds when idle, default 1) until
SIGTERM, then writes its ``stats``.  ``work`` is a minimal
claim-and-run loop for comparison (the bench's "raw" figures); it stops
after IDLE seconds without work.  All write their counts as JSON to
STATSFILE.
"""
import json
import os
import sys
import time

import transaction
import zope.component
from ZODB.POSException import ConflictError

from remotetask import db as dbmod
from remotetask.job import currentJob
from remotetask.retry import attempts
from remotetask.task import SimpleTask

LOG_ENV = 'REMOTETASK_SCALE_LOG'


def record(input):
    jobid = currentJob().jobid
    path = os.environ.get(LOG_ENV)
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, ('%d %d\n' % (jobid, os.getpid())).encode())
        finally:
            os.close(fd)
    return input


def noop(input):
    return input


def sleep10ms(input):
    time.sleep(0.01)
    return input


def register():
    zope.component.provideUtility(SimpleTask(record), name='scale.record')
    zope.component.provideUtility(SimpleTask(noop), name='scale.noop')
    zope.component.provideUtility(SimpleTask(sleep10ms), name='scale.sleep')


register()


def produce(uri, count, tag, statsfile, task='scale.record'):
    database = dbmod.openDB(uri)
    tm = transaction.TransactionManager()
    conn = database.open(tm)
    stats = {'added': 0}
    try:
        for i in range(count):
            for attempt in attempts(tm, outage=120, stats=stats):
                with attempt:
                    service = dbmod.getService(conn)
                    service.add(task, '%s-%d' % (tag, i))
            stats['added'] += 1
    except ConflictError as e:
        stats['error'] = 'ConflictError reached the caller: %s' % e
        return 2
    finally:
        _dump(stats, statsfile)
        conn.close()
        database.close()
    return 0


def work(uri, statsfile, idle=5.0, lease=30.0):
    """A minimal worker: claim one job in a transaction, run it in another.
    """
    database = dbmod.openDB(uri)
    tm = transaction.TransactionManager()
    conn = database.open(tm)
    stats = {'processed': 0}
    worker = 'agent-%d' % os.getpid()
    last = time.monotonic()
    try:
        while time.monotonic() - last < idle:
            job = None
            for attempt in attempts(tm, outage=120, stats=stats):
                with attempt:
                    service = dbmod.getService(conn)
                    claimed = service.claim(worker=worker, lease=lease,
                                            spread=True)
                    job = claimed[0] if claimed else None
                    jobid = job.id if job is not None else None
            if job is None:
                time.sleep(0.05)
                continue
            for attempt in attempts(tm, outage=120, stats=stats):
                with attempt:
                    service = dbmod.getService(conn)
                    service.run(service.jobs[jobid])
            stats['processed'] += 1
            last = time.monotonic()
    finally:
        _dump(stats, statsfile)
        conn.close()
        database.close()
    return 0


def process(uri, statsfile, lease=2.0, batch='auto'):
    """Run a real Processor until SIGTERM; write its stats."""
    import signal
    import threading
    from remotetask.processor import Processor
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    database = dbmod.openDB(uri)
    poll = float(os.environ.get('REMOTETASK_POLL', '1.0'))
    processor = Processor(database, lease=lease, poll_interval=poll,
                          maintenance_interval=1.0, grace=5.0, batch=batch)
    processor.start()
    with open(statsfile + '.ready', 'w'):
        pass
    try:
        while not stop.wait(0.2):
            pass
    finally:
        processor.stop(timeout=30)
        _dump(processor.stats, statsfile)
        database.close()
    return 0


def _dump(stats, path):
    with open(path, 'w') as f:
        json.dump(stats, f)


def main(argv):
    cmd = argv[0]
    if cmd == 'produce':
        uri, count, tag, statsfile = argv[1:5]
        task = argv[5] if len(argv) > 5 else 'scale.record'
        return produce(uri, int(count), tag, statsfile, task)
    if cmd == 'work':
        idle = float(argv[3]) if len(argv) > 3 else 5.0
        return work(argv[1], argv[2], idle)
    if cmd == 'process':
        lease = float(argv[3]) if len(argv) > 3 else 2.0
        batch = argv[4] if len(argv) > 4 else 'auto'
        batch = batch if batch == 'auto' else int(batch)
        return process(argv[1], argv[2], lease, batch)
    raise SystemExit('unknown command %r' % cmd)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))

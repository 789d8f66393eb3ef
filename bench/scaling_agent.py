"""The processes of bench/scaling.py, run with the remotetask source under
test first on PYTHONPATH (this checkout's, or ``--before``'s).

    python bench/scaling_agent.py enqueue URI N TASK
    python bench/scaling_agent.py work URI CONCURRENCY GOFILE STATSFILE [N]

    python bench/scaling_agent.py release URI N TASK STAMPFILE [PID...]

``enqueue`` adds N jobs of TASK, 1,000 per transaction.  ``work`` opens
the database, makes a ``Processor`` of CONCURRENCY threads, writes
STATSFILE.ready, waits for GOFILE to exist, starts the processor and runs
until SIGTERM, or, given N, until the processor has processed N jobs
(FileStorage: the only process on the file counts its own jobs); then it
writes its stats, the seconds from go to the last job and its own CPU
seconds over that span, as JSON, to STATSFILE.

With ``$SCALING_WARM`` set (``bench/scaling.py --warm``), ``work`` starts
its processor at once and writes STATSFILE.ready once the processor is in
the worker registry (its first heartbeat), without waiting for GOFILE:
the workers are running and idle, as workers that were started earlier
are, when ``release`` adds the backlog, all N jobs in ONE transaction, and
writes to STAMPFILE, as JSON, ``time.perf_counter()`` right after that
commit and the CPU seconds of the processes PID... (``/proc``) then.
"""
import json
import os
import signal
import sys
import threading
import time

import transaction

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import zope.component  # noqa: E402

from remotetask import db as dbmod  # noqa: E402
from remotetask.task import SimpleTask  # noqa: E402


def noop(input):
    return input


def sleep10ms(input):
    time.sleep(0.01)
    return input


zope.component.provideUtility(SimpleTask(noop), name='scale.noop')
zope.component.provideUtility(SimpleTask(sleep10ms), name='scale.sleep')

#: How long a drain may take before the agent gives up (seconds).
TIMEOUT = 240.0


def enqueue(uri, n, task):
    database = dbmod.openDB(uri)
    try:
        dbmod.ensureService(database)
        tm = transaction.TransactionManager()
        conn = database.open(tm)
        for first in range(0, n, 1000):
            for attempt in tm.attempts(20):
                with attempt:
                    service = dbmod.getService(conn)
                    for i in range(first, min(n, first + 1000)):
                        service.add(task, i)
        conn.close()
    finally:
        database.close()
    return 0


#: When the drain began (``time.time()``), for ``SCALING_TRACE=2``.
T0 = [0.0]


def cpuOf(pid):
    """CPU seconds (user + system) used so far by process ``pid``."""
    with open('/proc/%d/stat' % pid) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def release(uri, n, task, stampfile, pids):
    """Add the N jobs in one transaction; then write when (and the CPU
    seconds of ``pids`` then) to ``stampfile``."""
    database = dbmod.openDB(uri)
    try:
        tm = transaction.TransactionManager()
        conn = database.open(tm)
        for attempt in tm.attempts(20):
            with attempt:
                service = dbmod.getService(conn)
                for i in range(n):
                    service.add(task, i)
        stamp = time.perf_counter()
        cpus = {pid: cpuOf(pid) for pid in pids}
        conn.close()
    finally:
        database.close()
    with open(stampfile + '.tmp', 'w') as f:
        json.dump({'released': stamp, 'cpu': cpus}, f)
    os.rename(stampfile + '.tmp', stampfile)
    return 0


def registered(database, processor):
    """True once ``processor`` has an entry in the worker registry."""
    from remotetask import registry
    tm = transaction.TransactionManager()
    conn = database.open(tm)
    try:
        service = dbmod.getService(conn)
        return any(e.key == processor.registration.key
                   for e in registry.entries(service))
    finally:
        tm.abort()
        conn.close()


def traceConflicts():
    """Count the conflicts of this process by the class of the object
    (``$SCALING_TRACE`` set: the bench's --trace), and by where they were
    raised: the claim or the run of jobs (``SCALING_TRACE=2``: each with
    its time in the drain and its thread's claim slot); and the objects
    loaded and stored (``countObjects``)."""
    import collections
    import re
    import traceback
    from transaction._transaction import Transaction
    from ZODB.POSException import ConflictError
    found = collections.Counter()
    commit = Transaction.commit

    def traced(self):
        try:
            return commit(self)
        except ConflictError as e:
            stack = ''.join(traceback.format_stack(limit=12))
            where = 'claim' if '_claimIn' in stack else \
                'group' if '_runGroup' in stack else \
                'run' if '_attempts' in stack else 'other'
            text = str(e)
            klass = re.search(r'class ([\w.]+)', text)
            oid = re.search(r'oid (0x[0-9a-f]+)', text)
            key = '%s %s %s %s' % (
                where, type(e).__name__,
                klass.group(1) if klass else 'read conflict',
                oid.group(1) if oid else '?')
            if os.environ.get('SCALING_TRACE') == '2':
                # When in the drain, and the claim slot of the thread.
                from remotetask import structures
                key += ' at %.1fs, slot %s' % (time.time() - T0[0],
                                               structures.home())
            found[key] += 1
            raise
    Transaction.commit = traced
    countObjects(found)
    return found


def countObjects(found):
    """Count the objects this process loads and stores, by class
    (``load Job``, ``store _Lease``...), into ``found``."""
    from ZODB.Connection import Connection
    from ZODB.serialize import ObjectWriter
    setstate = Connection.setstate
    serialize = ObjectWriter.serialize

    def loading(self, obj):
        found['load %s' % type(obj).__name__] += 1
        return setstate(self, obj)

    def storing(self, obj):
        found['store %s' % type(obj).__name__] += 1
        return serialize(self, obj)
    Connection.setstate = loading
    ObjectWriter.serialize = storing


def cpu():
    t = os.times()
    return t.user + t.system


def work(uri, concurrency, gofile, statsfile, n=None):
    from remotetask.processor import Processor
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    database = dbmod.openDB(uri)
    processor = Processor(database, concurrency=concurrency, lease=60.0,
                          maintenance_interval=30.0, grace=5.0)
    result = {}
    traced = traceConflicts() if os.environ.get('SCALING_TRACE') else None
    deadline = time.monotonic() + TIMEOUT
    warm = bool(os.environ.get('SCALING_WARM'))
    if warm:
        started, cpu0 = time.perf_counter(), cpu()
        processor.start()
        while not registered(database, processor):
            if stop.is_set() or time.monotonic() > deadline:
                processor.stop(timeout=5)
                return 1
            time.sleep(0.01)
    with open(statsfile + '.ready', 'w'):
        pass
    while not warm and not os.path.exists(gofile):
        if stop.is_set() or time.monotonic() > deadline:
            return 1
        time.sleep(0.002)
    if not warm:
        T0[0] = time.time()
        started, cpu0 = time.perf_counter(), cpu()
        processor.start()
    try:
        if n is None:
            while not stop.wait(0.2):
                pass
        else:
            while processor.stats['processed'] < n:
                if stop.is_set() or time.monotonic() > deadline:
                    result['error'] = 'only %d of %d jobs processed' % (
                        processor.stats['processed'], n)
                    break
                time.sleep(0.002)
            result['seconds'] = time.perf_counter() - started
            result['cpu'] = cpu() - cpu0
    finally:
        processor.stop(timeout=30)
        result.update(processor.stats)
        if traced is not None:
            result['trace'] = dict(traced)
        with open(statsfile, 'w') as f:
            json.dump(result, f)
        database.close()
    return 0


def main(argv):
    if argv[0] == 'enqueue':
        return enqueue(argv[1], int(argv[2]), argv[3])
    if argv[0] == 'release':
        return release(argv[1], int(argv[2]), argv[3], argv[4],
                       [int(pid) for pid in argv[5:]])
    if argv[0] == 'work':
        n = int(argv[5]) if len(argv) > 5 else None
        return work(argv[1], int(argv[2]), argv[3], argv[4], n)
    raise SystemExit('unknown command %r' % argv[0])


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))

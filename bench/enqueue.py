"""Enqueue on FileStorage, and the floors under it.

    python bench/enqueue.py [--rounds 3] [--before SRC] [--one 2000]
                            [--batch 50000]

Measures ``service.add`` + commit on a FileStorage (as bench/run.py's
enqueue columns: a service no worker drains, jobs of the ``scale.noop``
task with an integer input) one job per transaction and 1,000 per
transaction, with the time split between the ``add()`` calls and the
commits.  Next to it, the floors of this machine and of ZODB, measured in
the same rounds:

- ``fsync``: appending 200 bytes to a file in the same directory and
  ``os.fsync`` it (what FileStorage does once per commit);
- ``ZODB 1 object``: a FileStorage commit changing one small persistent
  object (ZODB's own cost per commit, the fsync included);
- ``ZODB 1000 objects``: 1,000 new persistent objects with a job's
  attributes in one commit, each added to an ``LOBTree`` (ZODB's cost per
  stored object: a pickle, a record in the file and the index).

``--before SRC`` measures another checkout's ``src`` in the same rounds
(alternating), for same-run ratios.  Each measurement runs in a process
of its own (the one importing the checkout's remotetask).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import persistent

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def enqueueMain(src, per_txn, n):
    """Prints JSON: jobs/s, and the seconds spent in add() and in the
    commits, per job."""
    sys.path.insert(0, src)
    import transaction
    from remotetask import db as dbmod
    from remotetask.tests import scale_agents  # noqa: F401  (the tasks)
    workdir = tempfile.mkdtemp(prefix='remotetask-enqueue-')
    database = dbmod.openDB('file://' + os.path.join(workdir, 'e.fs'))
    try:
        dbmod.ensureService(database)
        tm = transaction.TransactionManager()
        conn = database.open(tm)

        def batch(first, count):
            t0 = time.perf_counter()
            service = dbmod.getService(conn)
            for i in range(first, first + count):
                service.add('scale.noop', i)
            t1 = time.perf_counter()
            tm.commit()
            return t1 - t0, time.perf_counter() - t1
        batch(0, min(per_txn, 100))     # warm: lanes, blocks of ids
        adding = committing = 0.0
        started = time.perf_counter()
        for first in range(0, n, per_txn):
            a, c = batch(first, min(per_txn, n - first))
            adding += a
            committing += c
        elapsed = time.perf_counter() - started
        conn.close()
    finally:
        database.close()
    print(json.dumps({'rate': n / elapsed, 'add': adding / n,
                      'commit': committing / n}))


class Thing(persistent.Persistent):
    """A stand-in for a job (the floors need no remotetask)."""


def floorsMain(n_fsync, n_commits, n_objects):
    """Prints JSON: seconds per fsync, per 1-object commit, per object
    of a 1,000-object commit."""
    import transaction
    from BTrees.LOBTree import LOBTree
    from ZODB import DB
    from ZODB.FileStorage import FileStorage
    workdir = tempfile.mkdtemp(prefix='remotetask-floors-')
    path = os.path.join(workdir, 'raw')
    with open(path, 'ab') as f:
        started = time.perf_counter()
        for i in range(n_fsync):
            f.write(b'x' * 200)
            f.flush()
            os.fsync(f.fileno())
        fsync = (time.perf_counter() - started) / n_fsync
    db = DB(FileStorage(os.path.join(workdir, 'f.fs')))
    try:
        tm = transaction.TransactionManager()
        conn = db.open(tm)
        root = conn.root()
        root['c'] = Thing()
        root['t'] = LOBTree()
        tm.commit()
        started = time.perf_counter()
        for i in range(n_commits):
            root['c'].value = i
            tm.commit()
        one = (time.perf_counter() - started) / n_commits
        tree = root['t']
        started = time.perf_counter()
        for k in range(n_objects // 1000):
            for i in range(k * 1000, (k + 1) * 1000):
                t = Thing()
                t.id, t.task, t.input = i, 'scale.noop', i
                t._status, t.created, t.eta = 'queued', time.time(), 0.0
                t.meta = {}
                tree[i] = t
            tm.commit()
        many = (time.perf_counter() - started) / n_objects
        conn.close()
    finally:
        db.close()
    print(json.dumps({'fsync': fsync, 'one': one, 'object': many}))


def child(args, src=None):
    env = dict(os.environ)
    if src:
        env['PYTHONPATH'] = os.pathsep.join([src, HERE])
    out = subprocess.run([sys.executable, os.path.abspath(__file__)] + args,
                         env=env, capture_output=True, text=True,
                         timeout=600)
    if out.returncode:
        raise RuntimeError('%s failed: %s' % (args[0], out.stderr[-2000:]))
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--before', default=None, metavar='SRC')
    parser.add_argument('--one', type=int, default=2000,
                        help='jobs added one per transaction')
    parser.add_argument('--batch', type=int, default=50000,
                        help='jobs added 1,000 per transaction')
    args = parser.parse_args(argv)
    versions = [('after', os.path.join(ROOT, 'src'))]
    if args.before:
        versions.insert(0, ('before', os.path.abspath(args.before)))
    results = {}
    print('load average at the start: %.2f' % os.getloadavg()[0])
    for r in range(args.rounds):
        floors = child(['floors', '500', '500', '20000'])
        results.setdefault('floors', []).append(floors)
        print('round %d floors: fsync %.3f ms, ZODB 1-object commit %.3f ms,'
              ' ZODB per object in 1,000-object commits %.1f us (%.0f/s)'
              % (r + 1, floors['fsync'] * 1e3, floors['one'] * 1e3,
                 floors['object'] * 1e6, 1 / floors['object']), flush=True)
        for name, src in versions:
            for per, n in ((1, args.one), (1000, args.batch)):
                got = child(['enqueue', src, str(per), str(n)], src)
                results.setdefault((name, per), []).append(got)
                print('round %d %-6s %4d/txn: %6.0f jobs/s (add %.1f us, '
                      'commit %.1f us per job)' % (
                          r + 1, name, per, got['rate'], got['add'] * 1e6,
                          got['commit'] * 1e6), flush=True)
    print('load average at the end: %.2f' % os.getloadavg()[0])
    print('\n| measure | %s |' % ' | '.join(n for n, s in versions))
    print('|---|%s' % ('---|' * len(versions)))
    for per in (1, 1000):
        print('| %d/txn jobs/s | %s |' % (per, ' | '.join(
            '%.0f-%.0f' % (min(g['rate'] for g in results[name, per]),
                           max(g['rate'] for g in results[name, per]))
            for name, src in versions)))
    if args.before:
        for per in (1, 1000):
            ratios = [a['rate'] / b['rate'] for a, b in zip(
                results['after', per], results['before', per])]
            print('after/before %d/txn, same rounds: %s' % (
                per, ', '.join('%.2f' % x for x in ratios)))
    f = results['floors']
    print('fsync ms: %s; ZODB 1-object commits/s: %s; ZODB objects/s in '
          '1,000-object commits: %s' % (
              ', '.join('%.3f' % (x['fsync'] * 1e3) for x in f),
              ', '.join('%.0f' % (1 / x['one']) for x in f),
              ', '.join('%.0f' % (1 / x['object']) for x in f)))
    med = statistics.median
    print('one per transaction, after: %.2fx of the ZODB 1-object commit '
          'rate (median)' % (med([g['rate'] for g in results['after', 1]])
                             * med([x['one'] for x in f])))


if __name__ == '__main__':
    cmd = sys.argv[1] if len(sys.argv) > 1 else None
    if cmd == 'enqueue':
        enqueueMain(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif cmd == 'floors':
        floorsMain(*[int(a) for a in sys.argv[2:5]])
    else:
        main()

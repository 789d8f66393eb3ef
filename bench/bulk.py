"""Bulk actions: one transaction against bounded steps (remotetask.bulk),
on a FileStorage holding ``--jobs`` start-later jobs, with a worker
running meanwhile.

    python bench/bulk.py [--jobs 100000] [--rounds 2] [--step 1000]

The template database is made once (``--jobs`` start-later jobs of task
``bulk``, added 5,000 per transaction); each round copies it for each
mode, and each mode runs in a fresh process, one after the other:

- ``one``: ``service.purge(task='bulk')`` then ``service.deleteJobs(
  status='cancelled')``, each in one ``ServiceRunner`` call (one
  transaction, retried whole on a conflict: what the CLI, the JSON API and
  XML-RPC did before);
- ``steps``: ``bulk.run(runner, purgeStep/deleteStep, batch=--step)``:
  one transaction per step.

Meanwhile a Processor (2 threads, queue ``live``) runs the ``live`` jobs
that a producer thread adds (10 per transaction, every 20 ms).  Printed
per mode and action: the wall time, the peak of Python allocations during
the action (tracemalloc, started after the database is open), the
process's peak RSS at the end, the action's transactions and its retried
attempts (conflicts), and the worker's conflicts / commits during the
action.  Compare the two modes of one round (the machine is shared).
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc

HERE = os.path.dirname(os.path.abspath(__file__))


def register():
    import zope.component
    from remotetask.task import SimpleTask
    zope.component.provideUtility(SimpleTask(lambda x: x), name='bulk')
    zope.component.provideUtility(SimpleTask(lambda x: x), name='live')


def build(path, jobs):
    import transaction
    import ZODB
    import ZODB.FileStorage
    from remotetask.service import TaskService
    register()
    db = ZODB.DB(ZODB.FileStorage.FileStorage(path))
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    service = conn.root()['tasks'] = TaskService()
    service.__name__ = 'tasks'
    tm.commit()
    done = 0
    while done < jobs:
        n = min(5000, jobs - done)
        for i in range(n):
            service.add('bulk', done + i, startLater=True)
        tm.commit()
        done += n
    conn.close()
    db.close()


def child(path, mode, step):
    """Run the two actions in ``mode``; print a JSON line of figures."""
    import transaction
    import ZODB
    import ZODB.FileStorage
    from remotetask import bulk, db as dbmod
    from remotetask.processor import Processor
    register()
    db = ZODB.DB(ZODB.FileStorage.FileStorage(path))
    runner = dbmod.ServiceRunner(db, 'tasks', attempts=50)
    runner(lambda s: s.count())
    processor = Processor(db, 'tasks', concurrency=2, queues=['live'],
                          poll_interval=0.05)
    processor.start()
    stop = threading.Event()

    def produce():
        tm = transaction.TransactionManager()
        conn = db.open(tm)
        try:
            while not stop.is_set():
                for attempt in tm.attempts(50):
                    with attempt:
                        service = conn.root()['tasks']
                        for i in range(10):
                            service.add('live', i, queue='live')
                time.sleep(0.02)
        finally:
            conn.close()
    producer = threading.Thread(target=produce)
    producer.start()
    time.sleep(1.0)
    results = {}
    try:
        for action in ('purge', 'delete'):
            calls = []

            def one(service):
                calls.append(1)
                if action == 'purge':
                    return service.purge(task='bulk')
                return service.deleteJobs(status='cancelled')

            def counted(stepFunc):
                def call(service, **kw):
                    calls.append(1)
                    return stepFunc(service, **kw)
                return call
            before = dict(processor.stats)
            tracemalloc.start()
            t0 = time.perf_counter()
            if mode == 'one':
                done, transactions = runner(one), 1
            else:
                steps = []
                kw = dict(task='bulk') if action == 'purge' else dict(
                    status='cancelled')
                done = bulk.run(runner, counted(
                    bulk.STEPS[action]), batch=step,
                    committed=steps.append, **kw)
                transactions = len(steps)
            elapsed = time.perf_counter() - t0
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            after = dict(processor.stats)
            results[action] = {
                'done': done, 'seconds': round(elapsed, 2),
                'peak_mb': round(peak / 2 ** 20, 1),
                'transactions': transactions,
                'retried': len(calls) - transactions,
                'worker_conflicts': after['conflicts'] - before['conflicts'],
                'worker_commits': after['commits'] - before['commits']}
    finally:
        stop.set()
        producer.join()
        processor.stop()
        db.close()
    results['rss_mb'] = round(resource.getrusage(
        resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(results))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--jobs', type=int, default=100000)
    parser.add_argument('--rounds', type=int, default=2)
    parser.add_argument('--step', type=int, default=1000)
    parser.add_argument('--child', nargs=2, metavar=('PATH', 'MODE'),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.step)
        return
    tmp = tempfile.mkdtemp(prefix='bench-bulk-')
    try:
        template = os.path.join(tmp, 'template.fs')
        t0 = time.perf_counter()
        build(template, args.jobs)
        print('built %d start-later jobs in %.0f s; load %s' % (
            args.jobs, time.perf_counter() - t0, os.getloadavg()[0]))
        for r in range(1, args.rounds + 1):
            for mode in ('one', 'steps'):
                path = os.path.join(tmp, '%s-%d.fs' % (mode, r))
                shutil.copy(template, path)
                if os.path.exists(template + '.index'):
                    shutil.copy(template + '.index', path + '.index')
                out = subprocess.run(
                    [sys.executable, __file__, '--child', path, mode,
                     '--step', str(args.step)],
                    check=True, capture_output=True, text=True).stdout
                figures = json.loads(out.strip().splitlines()[-1])
                for action in ('purge', 'delete'):
                    f = figures[action]
                    print('round %d %-5s %-6s %6d jobs %7.2f s  peak %6.1f MB'
                          '  %4d transactions, %d retried  worker %d '
                          'conflicts / %d commits' % (
                              r, mode, action, f['done'], f['seconds'],
                              f['peak_mb'], f['transactions'], f['retried'],
                              f['worker_conflicts'], f['worker_commits']))
                print('round %d %-5s peak RSS %.1f MB; load %.1f' % (
                    r, mode, figures['rss_mb'], os.getloadavg()[0]))
                os.remove(path)
    finally:
        shutil.rmtree(tmp)


if __name__ == '__main__':
    main()

"""Concurrent producers: do adds conflict? (issue 18)

    python bench/producers.py [--jobs N] [--kinds file,zeo,relstorage]
                              [--serve] [--output bench/RESULTS.md]

Each producer adds one job per transaction in a tight loop (retried by
``remotetask.retry.attempts``, which counts the conflicts and the classes
of the conflicting objects) while 4 workers drain the queue:

- FileStorage: 1 thread, then 8 threads of one process (each with its own
  connection, as request threads have), 4 Processor threads in the same
  process;
- ZEO and RelStorage: 1 process, then 4 processes (one thread each), 4
  ``Processor`` worker processes.
- ``--serve``: ``remotetask serve`` (FileStorage, processing on) with 1
  HTTP client, then 8, each sending ``POST /api/jobs`` one after the
  other: adds/s and the answers that were not 201.

The ratios (8 threads vs 1, 4 processes vs 1, 8 clients vs 1) are
measured in the same run, one right after the other: this machine is
shared, absolute figures move between runs.
"""
import argparse
import datetime
import json
import os
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import measure  # noqa: E402
import transaction  # noqa: E402

from remotetask import db as dbmod  # noqa: E402
from remotetask import testing  # noqa: E402
from remotetask.retry import attempts  # noqa: E402

TASK = 'scale.noop'
WORKERS = 4


def produce(uri_or_db, threads, count, tag='p'):
    """``threads`` threads adding ``count`` jobs each, one per
    transaction.  Returns their summed stats and the elapsed seconds."""
    database = dbmod.openDB(uri_or_db) if isinstance(uri_or_db, str) \
        else uri_or_db
    results = [None] * threads
    barrier = threading.Barrier(threads)

    def loop(n):
        tm = transaction.TransactionManager()
        conn = database.open(tm)
        stats = {'added': 0}
        try:
            with tm:
                dbmod.getService(conn)      # loaded before the clock starts
            barrier.wait()
            started = time.perf_counter()
            for i in range(count):
                for attempt in attempts(tm, conflicts=50, stats=stats):
                    with attempt:
                        dbmod.getService(conn).add(TASK, '%s%d-%d'
                                                   % (tag, n, i))
                stats['added'] += 1
            stats['seconds'] = time.perf_counter() - started
        finally:
            conn.close()
        results[n] = stats

    workers = [threading.Thread(target=loop, args=(n,))
               for n in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    if isinstance(uri_or_db, str):
        database.close()
    return merge(results)


def merge(results):
    total = {'added': 0, 'transactions': 0, 'conflicts': 0, 'seconds': 0.0,
             'conflicts_by_class': {}}
    for stats in results:
        for key in ('added', 'transactions', 'conflicts'):
            total[key] += stats.get(key, 0)
        total['seconds'] = max(total['seconds'], stats.get('seconds', 0.0))
        for name, n in stats.get('conflicts_by_class', {}).items():
            where = total['conflicts_by_class']
            where[name] = where.get(name, 0) + n
    return total


def figures(total):
    return {'adds_per_s': total['added'] / max(total['seconds'], 1e-9),
            'conflict_rate': total['conflicts'] / max(1,
                                                      total['transactions']),
            'transactions': total['transactions'],
            'conflicts': total['conflicts'],
            'by_class': total['conflicts_by_class']}


def fileScenario(workdir, threads, count):
    with measure.Store('file', workdir) as store:
        with store.workers(WORKERS) if WORKERS else _NoWorkers() as w:
            total = produce(store.db, threads, count)
        drained = w.stats
    result = figures(total)
    result['worker_conflicts'] = drained.get('conflicts', 0)
    result['worker_commits'] = drained.get('commits', 0)
    return result


def processScenario(kind, workdir, processes, count):
    with measure.Store(kind, workdir) as store:
        with store.workers(WORKERS) if WORKERS else _NoWorkers() as w:
            procs = []
            for i in range(processes):
                out = os.path.join(workdir, 'producer-%d.json' % i)
                procs.append((subprocess.Popen(
                    [sys.executable, os.path.abspath(__file__), 'produce',
                     store.uri, '1', str(count), out, 'p%d-' % i],
                    env=measure.env()), out))
            for proc, out in procs:
                if proc.wait(600) != 0:
                    raise RuntimeError('producer failed')
            totals = []
            for proc, out in procs:
                with open(out) as f:
                    totals.append(json.load(f))
        drained = w.stats
    result = figures(merge(totals))
    result['worker_conflicts'] = drained.get('conflicts', 0)
    result['worker_commits'] = drained.get('commits', 0)
    return result


class _NoWorkers:
    stats = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def serveScenario(workdir, clients, count):
    """``clients`` HTTP clients, each POSTing ``count`` jobs one after the
    other to a fresh ``remotetask serve`` on FileStorage (processing
    on)."""
    import http.client
    path = os.path.join(workdir, 'serve-%d.fs' % clients)
    for suffix in ('', '.index', '.lock', '.tmp'):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    port = testing.freePort()
    proc = subprocess.Popen(
        testing.remotetaskCommand('serve', '--db', 'file://' + path,
                                  '--import', 'remotetask.tests.scale_agents',
                                  '--port', port),
        env=measure.env(), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    statuses = {}
    lock = threading.Lock()
    try:
        testing.waitForPort(port, 60, proc=proc)
        barrier = threading.Barrier(clients + 1)

        def client(n):
            conn = http.client.HTTPConnection('127.0.0.1', port, timeout=60)
            headers = {'Content-Type': 'application/json',
                       'Accept': 'application/json'}
            barrier.wait()
            for i in range(count):
                conn.request('POST', '/api/jobs', json.dumps(
                    {'task': TASK, 'input': '%d-%d' % (n, i)}), headers)
                response = conn.getresponse()
                response.read()
                with lock:
                    statuses[response.status] = statuses.get(
                        response.status, 0) + 1
            conn.close()
        threads = [threading.Thread(target=client, args=(n,))
                   for n in range(clients)]
        for t in threads:
            t.start()
        barrier.wait()
        started = time.perf_counter()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started
    finally:
        testing.stopProcess(proc)
    return {'adds_per_s': statuses.get(201, 0) / elapsed,
            'statuses': statuses}


#: The heading of this bench's section of bench/RESULTS.md.
MARK = '## Concurrent producers (issue 18)'


def section(path):
    """This bench's section of the results file at ``path`` ('' if none):
    from MARK to the next heading of its level."""
    if not os.path.exists(path):
        return ''
    with open(path) as f:
        text = f.read()
    start = text.find(MARK + '\n')
    if start < 0:
        return ''
    end = text.find('\n## ', start + len(MARK))
    return text[start:] if end < 0 else text[start:end + 1]


def writeSection(path, text):
    """Put ``text`` (starting with MARK) in the results file at ``path`` in
    place of this bench's section, or at its end."""
    old = ''
    if os.path.exists(path):
        with open(path) as f:
            old = f.read()
    current = section(path)
    if current:
        new = old.replace(current, text)
    else:
        new = old + ('\n' if old and not old.endswith('\n\n') else '') + text
    with open(path, 'w') as f:
        f.write(new)


def loadavg():
    try:
        return os.getloadavg()[0]
    except OSError:
        return float('nan')


def main(argv=None):
    global WORKERS
    parser = argparse.ArgumentParser()
    parser.add_argument('--jobs', type=int, default=400,
                        help='jobs per producer (default 400)')
    parser.add_argument('--rel-jobs', type=int, default=150,
                        help='jobs per producer on RelStorage (default 150)')
    parser.add_argument('--kinds', default='file,zeo,relstorage')
    parser.add_argument('--serve', action='store_true')
    parser.add_argument('--workers', type=int, default=4,
                        help='workers draining meanwhile (default 4)')
    parser.add_argument('--serve-jobs', type=int, default=150)
    parser.add_argument('--output', help='a results file (such as '
                        'bench/RESULTS.md) whose section this run replaces')
    args = parser.parse_args(argv)
    WORKERS = args.workers
    import tempfile
    rows = []
    load0 = loadavg()
    with tempfile.TemporaryDirectory() as workdir:
        for kind in args.kinds.split(','):
            if not kind:
                continue
            if kind == 'file':
                pairs = [(1, fileScenario(workdir, 1, args.jobs)),
                         (8, fileScenario(workdir, 8, args.jobs))]
                unit = 'threads'
            else:
                n = args.rel_jobs if kind == 'relstorage' else args.jobs
                pairs = [(1, processScenario(kind, workdir, 1, n)),
                         (4, processScenario(kind, workdir, 4, n))]
                unit = 'processes'
            for n, result in pairs:
                rows.append((kind, '%d %s' % (n, unit), result))
                print(kind, n, unit, json.dumps(result), flush=True)
        if args.serve:
            for clients in (1, 8):
                result = serveScenario(workdir, clients, args.serve_jobs)
                rows.append(('serve', '%d clients' % clients, result))
                print('serve', clients, json.dumps(result), flush=True)
    text = report(rows, args, load0, loadavg())
    print(text)
    if args.output:
        writeSection(args.output, text)


def report(rows, args, load0, load1):
    from run import machine
    lines = [MARK, '',
             'Written by `python bench/producers.py` on %s.' %
             datetime.datetime.utcnow().strftime('%Y-%m-%d %H:%M UTC'), '',
             'Machine: %s. Load average (1 min) at the start: %.2f, at the '
             'end: %.2f (shared with other sessions: compare the ratios, '
             'measured one right after the other).' % (
                 machine(), load0, load1), '',
             'Each producer adds %d jobs (%d on RelStorage), one per '
             'transaction, while %d workers drain.' % (
                 args.jobs, args.rel_jobs, WORKERS), '',
             '| storage | producers | adds/s | add transactions | '
             'conflicted | rate | conflicting objects | workers\' '
             'conflicts / commits |', '|---|---|---|---|---|---|---|---|']
    base = {}
    for kind, who, r in rows:
        if kind == 'serve':
            continue
        base.setdefault(kind, r['adds_per_s'])
        lines.append('| %s | %s | %.0f (%.2fx) | %d | %d | %.2f %% | %s | '
                     '%d / %d |' % (
                         kind, who, r['adds_per_s'],
                         r['adds_per_s'] / base[kind], r['transactions'],
                         r['conflicts'], 100 * r['conflict_rate'],
                         ', '.join('%s %d' % kv for kv in sorted(
                             r['by_class'].items())) or '-',
                         r['worker_conflicts'], r['worker_commits']))
    serve = [(who, r) for kind, who, r in rows if kind == 'serve']
    if serve:
        lines += ['', '`remotetask serve` (FileStorage, processing on), '
                  'HTTP clients each sending POST /api/jobs one after the '
                  'other (%d each):' % args.serve_jobs, '',
                  '| clients | adds/s | answers |', '|---|---|---|']
        first = serve[0][1]['adds_per_s']
        for who, r in serve:
            lines.append('| %s | %.0f (%.2fx) | %s |' % (
                who, r['adds_per_s'], r['adds_per_s'] / first,
                ', '.join('%s: %d' % kv for kv in
                          sorted(r['statuses'].items()))))
    return '\n'.join(lines) + '\n'


if __name__ == '__main__':
    if len(sys.argv) > 1 and sys.argv[1] == 'produce':
        uri, threads, count, out, tag = sys.argv[2:7]
        with open(out, 'w') as f:
            json.dump(produce(uri, int(threads), int(count), tag), f)
    else:
        main()

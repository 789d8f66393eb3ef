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


def produce(uri_or_db, threads, count, tag='p', timed=False, ready=None,
            go=None):
    """``threads`` threads adding ``count`` jobs each, one per
    transaction.  Returns their summed stats and the elapsed seconds.

    ``timed``: also the time spent in ``add()`` and in the commit, the
    loops' wall-clock start and end, this process's CPU seconds over the
    loops, and (ZEO) where the commits' time went
    (``accounting.StorageTimers``).

    ``ready``, ``go``: paths of files; once loaded, the threads create
    ``ready`` and wait for ``go`` to exist before they start (so that
    producer processes start their loops together)."""
    database = dbmod.openDB(uri_or_db) if isinstance(uri_or_db, str) \
        else uri_or_db
    timers = None
    if timed and hasattr(database.storage, '_server'):
        import accounting
        timers = accounting.StorageTimers(database.storage)
    results = [None] * threads
    barrier = threading.Barrier(threads)
    spans = []

    def loop(n):
        tm = transaction.TransactionManager()
        conn = database.open(tm)
        stats = {'added': 0, 'add_seconds': 0.0, 'commit_seconds': 0.0}
        clock = time.perf_counter
        try:
            with tm:
                dbmod.getService(conn)      # loaded before the clock starts
            if barrier.wait() == 0 and ready:
                open(ready, 'w').close()
            if go:
                waitFor([go])
            spans.append((time.time(), os.times()))
            started = clock()
            for i in range(count):
                for attempt in attempts(tm, conflicts=50, stats=stats):
                    with attempt:
                        t0 = clock()
                        dbmod.getService(conn).add(TASK, '%s%d-%d'
                                                   % (tag, n, i))
                        t1 = clock()
                    stats['add_seconds'] += t1 - t0
                    stats['commit_seconds'] += clock() - t1
                stats['added'] += 1
            stats['seconds'] = clock() - started
            spans.append((time.time(), os.times()))
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
    total = merge(results)
    if spans:
        first, last = min(spans), max(spans)
        total['start'], total['end'] = first[0], last[0]
        total['cpu'] = sum(last[1][:2]) - sum(first[1][:2])
        if timers is not None:
            total['timers'] = timers.figures()
    return total


def waitFor(paths, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not all(os.path.exists(p) for p in paths):
        if time.monotonic() > deadline:
            raise TimeoutError('no %s after %ss' % (paths, timeout))
        time.sleep(0.001)


def merge(results):
    total = {'added': 0, 'transactions': 0, 'conflicts': 0, 'seconds': 0.0,
             'conflicts_by_class': {}}
    for stats in results:
        for key in ('added', 'transactions', 'conflicts', 'add_seconds',
                    'commit_seconds'):
            if key in stats:
                total[key] = total.get(key, 0) + stats[key]
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


def processScenario(kind, workdir, processes, count, timed=False):
    """``processes`` producer processes that start their loops together
    (each waits for the others to be loaded); adds/s counts from the
    first loop's start to the last one's end."""
    server = TimedZEOServer if timed else None
    with measure.Store(kind, workdir, server) as store:
        sampler = None
        with store.workers(WORKERS) if WORKERS else _NoWorkers() as w:
            if timed:
                sampler = startSampler(store, w)
            go = os.path.join(workdir, 'producers-go')
            if os.path.exists(go):
                os.remove(go)
            procs = []
            for i in range(processes):
                out = os.path.join(workdir, 'producer-%d.json' % i)
                for old in (out, out + '.ready'):
                    if os.path.exists(old):
                        os.remove(old)
                procs.append((subprocess.Popen(
                    [sys.executable, os.path.abspath(__file__), 'produce',
                     store.uri, '1', str(count), out, 'p%d-' % i,
                     '1' if timed else '0', out + '.ready', go],
                    env=measure.env()), out))
                if sampler:
                    sampler.add('producer%d' % i, procs[-1][0].pid)
            waitFor([out + '.ready' for proc, out in procs])
            open(go, 'w').close()
            for proc, out in procs:
                if proc.wait(600) != 0:
                    raise RuntimeError('producer failed')
            if sampler:
                sampler.__exit__(None, None, None)
            totals = []
            for proc, out in procs:
                with open(out) as f:
                    totals.append(json.load(f))
        drained = w.stats
    total = merge(totals)
    result = figures(total)
    # From the first loop's start to the last one's end (the processes'
    # clocks are one machine's).
    span = max(t['end'] for t in totals) - min(t['start'] for t in totals)
    result['adds_per_s'] = total['added'] / max(span, 1e-9)
    result['worker_conflicts'] = drained.get('conflicts', 0)
    result['worker_commits'] = drained.get('commits', 0)
    if timed:
        result['accounting'] = account(totals, total, sampler)
    return result


class TimedZEOServer(testing.ZEOServer):
    """runzeo whose commit lock is timed (bench/accounting.py)."""

    def start(self, timeout=30.0):
        import accounting
        with open(self.log, 'ab') as logf:
            self.proc = subprocess.Popen(
                accounting.zeoServerCommand(self.port, self.path),
                stdout=logf, stderr=subprocess.STDOUT, env=measure.env())
        testing.waitForPort(self.port, timeout, proc=self.proc)
        return self


def startSampler(store, workers):
    import accounting
    pids = {'server': store.server.proc.pid} if store.server else {}
    for i, (proc, statsfile) in enumerate(getattr(workers, 'procs', [])):
        pids['worker%d' % i] = proc.pid
    status = None
    if store.server:
        status = store.db.storage.server_status
    return accounting.CPUSampler(pids, status).__enter__()


def account(totals, total, sampler):
    """The CPU and time accounting of a timed run: see
    bench/accounting.py."""
    import accounting
    start = min(t['start'] for t in totals)
    end = max(t['end'] for t in totals)
    window = sampler.window(start, end)
    cpu = window['cpu']
    added = total['added']
    timers = accounting.merge(t['timers'] for t in totals if 'timers' in t)
    commits = total['transactions']
    return {
        'span_seconds': end - start,
        'span_adds_per_s': added / max(1e-9, end - start),
        'window_seconds': window['seconds'],
        'machine_busy': window['machine_busy'],
        'cores': window['cores'],
        'cpu_server': cpu.get('server', 0.0),
        'cpu_workers': sum(v for k, v in cpu.items()
                           if k.startswith('worker')),
        'cpu_producers': sum(v for k, v in cpu.items()
                             if k.startswith('producer')),
        'cpu_producers_loops': sum(t.get('cpu', 0.0) for t in totals),
        'server': window['server'],
        'server_commits_per_s': window['server'].get('commits', 0)
        / max(1e-9, window['seconds']),
        # The share of the time the server's commit lock was held.
        'lock_busy': window['server'].get('lock_held', 0.0)
        / max(1e-9, window['seconds']),
        'lock_ms_per_commit': 1000 * window['server'].get('lock_held', 0.0)
        / max(1, window['server'].get('lock_taken', 0)),
        # ms per server commit: the vote's work, the gap until the
        # client's tpc_finish arrives, the finish's work (lock held).
        'lock_split_ms': {
            part: 1000 * window['server'].get('lock_' + part, 0.0)
            / max(1, window['server'].get('commits', 0))
            for part in ('vote', 'gap', 'finish')},
        # Per add, in ms, summed over the producers.
        'ms_per_add': {
            'loop': 1000 * sum(t['seconds'] for t in totals) / added,
            'add': 1000 * total.get('add_seconds', 0.0) / added,
            'commit': 1000 * total.get('commit_seconds', 0.0) / added,
            'cpu': 1000 * sum(t.get('cpu', 0.0) for t in totals) / added,
            **{phase: 1000 * s / added
               for phase, s in timers['seconds'].items()}},
        'calls_per_add': {phase: n / added
                          for phase, n in timers['calls'].items()},
        'bytes_per_commit': timers['bytes'] / max(1, commits),
        'loads_per_add': {name: n / added
                          for name, n in timers['loaded'].items()},
    }


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
    parser.add_argument('--accounting', action='store_true',
                        help='ZEO: CPU of the server, workers and '
                        'producers, the server\'s commits/s, the producers\' '
                        'time per add by phase (bench/accounting.py)')
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
                pairs = [(1, processScenario(kind, workdir, 1, n,
                                             args.accounting)),
                         (4, processScenario(kind, workdir, 4, n,
                                             args.accounting))]
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
    timed = [(kind, who, r['accounting']) for kind, who, r in rows
             if 'accounting' in r]
    if timed:
        lines += ['', 'CPU accounting (`--accounting`, bench/accounting.py): '
                  'CPU seconds of each process over the producers\' loops '
                  '(/proc/PID/stat), the machine\'s busy share of its %d '
                  'cores, the ZEO server\'s commits (its `server_status()`, '
                  'producers\' and workers\' together) and the producers\' '
                  'time per add, ms (summed over the producers: `loop` is '
                  'their wall time, `cpu` their own CPU; `load` the loads '
                  'that missed the cache, `vote` and `finish` the two round '
                  'trips of a commit, waiting for the commit lock included; '
                  'the server, lock and phase columns are ZEO\'s: 0 on '
                  'RelStorage):' % timed[0][2]['cores'], '',
                  '| storage | producers | seconds | machine busy | CPU s: '
                  'server / workers / producers | CPU ms per add: server / '
                  'workers / producers | server commits/s | commit lock '
                  'held: share of the time, ms per taking (vote work / gap '
                  'until tpc_finish / finish work per commit) | server loads '
                  'per add | producer ms per add: loop / cpu / load / vote '
                  '/ finish | objects stored per add |',
                  '|---|---|---|---|---|---|---|---|---|---|---|']
        for kind, who, a in timed:
            m = a['ms_per_add']
            added = a['span_adds_per_s'] * a['span_seconds']
            lines.append(
                '| %s | %s | %.1f | %.0f %% | %.2f / %.2f / %.2f | '
                '%.2f / %.2f / %.2f | %.0f | %.0f %%, %.2f (%.2f / %.2f / '
                '%.2f) | %.1f | '
                '%.2f / %.2f / %.2f / %.2f / %.2f | %.1f |' % (
                    kind, who, a['span_seconds'], 100 * a['machine_busy'],
                    a['cpu_server'], a['cpu_workers'], a['cpu_producers'],
                    1000 * a['cpu_server'] / added,
                    1000 * a['cpu_workers'] / added,
                    1000 * a['cpu_producers'] / added,
                    a['server_commits_per_s'], 100 * a['lock_busy'],
                    a['lock_ms_per_commit'], a['lock_split_ms']['vote'],
                    a['lock_split_ms']['gap'], a['lock_split_ms']['finish'],
                    a['server'].get('loads', 0) / added,
                    m['loop'], m['cpu'], m['load'], m['tpc_vote'],
                    m['tpc_finish'], a['calls_per_add']['store']))
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
        timed, ready, go = (sys.argv[7:10] + ['0', None, None])[:3]
        result = produce(uri, int(threads), int(count), tag, timed == '1',
                         ready, go)
        with open(out, 'w') as f:
            json.dump(result, f)
    else:
        main()

"""remotetask benchmarks, side by side with huey, RQ and Celery.

    python bench/run.py [--quick] [--skip-peers] [--skip-cold]
                        [--output bench/RESULTS.md]

Measures, on FileStorage, ZEO and RelStorage (PostgreSQL on 127.0.0.1:5432):
enqueue jobs/s (one job per transaction and 1,000 per transaction), drain
jobs/s of a no-op task with 1 and 4 workers, the round trip enqueue ->
result seen (p50/p95), a 10 ms task with 1 and 4 workers over ZEO, and the
cost per add and per claim+run with 1,000 and with 100,000 jobs queued;
then the same enqueue/drain/round trip on huey (SqliteHuey), RQ
(SimpleWorker) and Celery (solo pool) with the local Redis (started if it is
not running).  Then the cold start of bench/coldstart.py (a backlog of
3,000 and 30,000 jobs, --quick: 1,000 and 3,000, then ONE worker, timed
from its process start, against huey, RQ and Celery started the same way),
and bench/scaling.py's 4 workers against 1 (threads of one process on
FileStorage, processes over ZEO, no-op and 10 ms jobs, with the CPU the
workers and the ZEO server used).
Writes a table to bench/RESULTS.md and prints the targets with their
ratios.  The peers' commands are the ones installed beside sys.executable.
"""
import argparse
import datetime
import os
import platform
import sys
import tempfile
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import coldstart  # noqa: E402
import measure  # noqa: E402
import scaling  # noqa: E402

#: The main rows run workers with their default ``--batch auto`` (claims
#: sized to about 0.1 s of work, run in groups that commit once per 0.1 s);
#: the rows marked "batch=1" run them strictly one job per claim and per
#: commit, for comparison.
STRICT = 1


def versions():
    import importlib.metadata as md
    found = {}
    for name in ('ZODB', 'ZEO', 'RelStorage', 'BTrees', 'persistent',
                 'psycopg2', 'huey', 'rq', 'celery', 'redis'):
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            found[name] = 'not installed'
    return found


def machine():
    cpu = platform.processor() or '?'
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    cpu = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    return '%s, %d cores (%s), Python %s' % (
        platform.platform(), os.cpu_count(), cpu, platform.python_version())


def fmt(value, unit=''):
    if value is None:
        return 'n/a'
    if isinstance(value, str):
        return value
    if unit == 'ms':
        return '%.1f' % (value * 1000)
    if unit == 'us':
        return '%.0f' % (value * 1e6)
    return '%.0f' % value


def guarded(notes, label, func, *args, **kw):
    """``func(*args)``, or None and a note if it fails."""
    try:
        return func(*args, **kw)
    except Exception:
        traceback.print_exc()
        notes.append('%s failed: %s' % (
            label, traceback.format_exc().strip().splitlines()[-1]))
        return None


def pair(value):
    return (None, None) if value is None else value


def benchStore(kind, args, workdir, rows, extra, notes):
    n = args.n_rel if kind == 'relstorage' else args.n
    name = 'remotetask %s' % kind
    with measure.Store(kind, workdir) as store:
        row = {'system': name}
        row['enq1'] = guarded(notes, name + ' enqueue', store.measureEnqueue,
                              args.enqueue, 1)
        row['enq1000'] = guarded(notes, name + ' enqueue',
                                 store.measureEnqueue, args.enqueue_batch,
                                 1000)
        for workers in (1, 4):
            row['drain%d' % workers], row['retry%d' % workers] = pair(
                guarded(notes, '%s drain %d' % (name, workers),
                        measure.remotetaskDrain, store, workers, n))
        row['p50'], row['p95'] = pair(guarded(
            notes, name + ' round trip', measure.remotetaskLatency, store,
            args.samples))
        rows.append(row)
        print(row, flush=True)
        batched = {'system': '%s, Processor batch=%d' % (name, STRICT)}
        for workers in (1, 4):
            batched['drain%d' % workers] = pair(guarded(
                notes, '%s batch drain %d' % (name, workers),
                measure.remotetaskDrain, store, workers, n, batch=STRICT))[0]
        rows.append(batched)
        print(batched, flush=True)
        if kind in ('file', 'zeo'):
            serveuri = store.uri if kind == 'zeo' else 'file://' + \
                os.path.join(workdir, 'serve.fs')
            extra['serve', kind] = guarded(notes, name + ' serve round trip',
                                           measure.serveLatency, serveuri,
                                           args.samples)
            print('serve', kind, extra['serve', kind], flush=True)
        if kind == 'file':
            loop = {'system': 'remotetask file, structures only: claim+run '
                              '20 jobs per transaction (no Processor)'}
            loop['drain1'] = guarded(notes, 'service loop',
                                     measure.serviceLoopDrain, store, n, 20)
            rows.append(loop)
            print(loop, flush=True)
        if kind == 'zeo':
            r1, c1 = pair(guarded(notes, 'sleep 1', measure.remotetaskDrain,
                                  store, 1, args.sleep_jobs, 'scale.sleep'))
            r4, c4 = pair(guarded(notes, 'sleep 4', measure.remotetaskDrain,
                                  store, 4, args.sleep_jobs, 'scale.sleep'))
            if r1 and r4:
                extra['sleep'] = (r1, r4, c1, c4)
            print('sleep', r1, r4, c1, c4, flush=True)
            s1, _ = pair(guarded(notes, 'sleep 1 strict',
                                 measure.remotetaskDrain, store, 1,
                                 args.sleep_jobs, 'scale.sleep', STRICT))
            s4, sc4 = pair(guarded(notes, 'sleep 4 strict',
                                   measure.remotetaskDrain, store, 4,
                                   args.sleep_jobs, 'scale.sleep', STRICT))
            if s1 and s4:
                extra['sleep strict'] = (s1, s4, sc4)
            print('sleep strict', s1, s4, sc4, flush=True)
        if kind == 'file':
            for queued in (1000, args.big):
                cost = guarded(notes, 'cost %d' % queued, measure.opCost,
                               store, queued, args.ops)
                if cost:
                    extra['cost', queued] = cost
                print('cost', queued, cost, flush=True)


def benchPeer(name, args, rows):
    peer = measure.Peer(name)
    row = {'system': {'huey': 'huey SqliteHuey', 'rq': 'RQ SimpleWorker',
                      'celery': 'Celery solo'}[name]}
    row['enq1'] = peer.enqueue(args.enqueue)
    row['drain1'] = peer.drain(1, args.n)
    row['drain4'] = peer.drain(4, args.n)
    row['p50'], row['p95'] = peer.latency(args.samples)
    peer.reset()
    rows.append(row)
    print(row, flush=True)


def targets(rows, extra):
    by = {r['system']: r for r in rows}
    lines = []

    def check(what, value, goal, ratio_text):
        if value is None or goal is None:
            lines.append('| %s | n/a | %s | not measured |' % (what,
                                                             ratio_text))
            return
        ok = value >= goal
        lines.append('| %s | %.0f | %s (%.2fx of the target) | %s |' % (
            what, value, ratio_text, value / goal if goal else 0,
            'met' if ok else 'MISSED'))

    def get(system, key):
        return by.get(system, {}).get(key)

    f1 = get('remotetask file', 'drain1')
    fb = get('remotetask file, Processor batch=%d' % STRICT, 'drain1')
    for peer, factor in (('huey SqliteHuey', 1), ('Celery solo', 3),
                         ('RQ SimpleWorker', 5)):
        p = get(peer, 'drain1')
        check('drain 1 worker FileStorage >= %dx %s' % (factor, peer), f1,
              p * factor if p else None,
              '%s: %.0f/s' % (peer, p) if p else 'peer not measured')
        check('(same, Processor batch=%d)' % STRICT, fb,
              p * factor if p else None,
              '%s: %.0f/s' % (peer, p) if p else 'peer not measured')
    check('enqueue 1/txn FileStorage >= 800/s', get('remotetask file',
                                                    'enq1'), 800, '800/s')
    check('enqueue 1000/txn FileStorage >= 20,000/s',
          get('remotetask file', 'enq1000'), 20000, '20,000/s')
    for kind in ('file', 'zeo', 'relstorage'):
        lines.append('| enqueue 1/txn, %s | %s/s | | |' % (
            kind, fmt(get('remotetask %s' % kind, 'enq1'))))
    if ('cost', 1000) in extra:
        for i, op in enumerate(('add', 'claim+run')):
            small = extra['cost', 1000][i]
            big = [v for k, v in extra.items() if k[0] == 'cost'
                   and k[1] != 1000][0][i]
            ratio = big / small
            lines.append('| %s cost with many queued <= 1.3x of 1,000 '
                         'queued | %.2fx | %.0f us vs %.0f us | %s |' % (
                             op, ratio, big * 1e6, small * 1e6,
                             'met' if ratio <= 1.3 else 'MISSED'))
    if 'sleep' in extra:
        r1, r4, c1, c4 = extra['sleep']
        speedup = r4 / r1
        lines.append('| 10 ms task, 4 vs 1 worker over ZEO >= 3.5x | %.2fx '
                     '| %.0f/s vs %.0f/s | %s |' % (
                         speedup, r4, r1,
                         'met' if speedup >= 3.5 else 'MISSED'))
        lines.append('| conflict retries <= 5%% of transactions (4 workers, '
                     'ZEO) | %.1f%% | 1 worker: %.1f%% | %s |' % (
                         c4 * 100, c1 * 100, 'met' if c4 <= .05 else
                         'MISSED'))
    if 'sleep strict' in extra:
        s1, s4, sc4 = extra['sleep strict']
        lines.append('| (same, Processor batch=%d) | %.2fx | %.0f/s vs %.0f/s, '
                     '%.1f%% retried | %s |' % (
                         STRICT, s4 / s1, s4, s1, sc4 * 100,
                         'met' if s4 / s1 >= 3.5 else 'MISSED'))
    for kind, goal in (('file', 0.025), ('zeo', 0.050)):
        served = extra.get(('serve', kind))
        if served:
            p50, p95 = served
            lines.append('| round trip p50 in `serve` on %s <= %.0f ms | '
                         '%.1f ms (p95 %.1f ms) | %.2fx of the budget | %s |'
                         % (kind, goal * 1000, p50 * 1000, p95 * 1000,
                            p50 / goal, 'met' if p50 <= goal else 'MISSED'))
        p50 = get('remotetask %s' % kind, 'p50')
        if p50 is not None:
            lines.append('| round trip p50 with a worker process on %s <= '
                         '%.0f ms | %.1f ms | %.2fx of the budget | %s |' % (
                             kind, goal * 1000, p50 * 1000, p50 / goal,
                             'met' if p50 <= goal else 'MISSED'))
    return lines


def _sections(text):
    """The '## ' sections of a Markdown text: [(heading line, section
    text)], the part before the first heading left out."""
    found = []
    lines = text.split('\n')
    starts = [i for i, line in enumerate(lines) if line.startswith('## ')]
    for n, i in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(lines)
        found.append((lines[i].strip(),
                      '\n'.join(lines[i:end]).rstrip('\n') + '\n'))
    return found


def keptSections(path, written):
    """The sections of the results file at ``path`` whose headings
    ``written`` (this run's text) does not have, joined."""
    if not os.path.exists(path):
        return ''
    with open(path) as f:
        old = f.read()
    mine = {heading for heading, _ in _sections(written)}
    return '\n'.join(body for heading, body in _sections(old)
                     if heading not in mine)


def write(path, rows, extra, args, notes, cold=()):
    out = ['# Benchmark results', '',
           'Written by `python bench/run.py%s` on %s UTC.' % (
               ' --quick' if args.quick else '',
               datetime.datetime.utcnow().strftime('%Y-%m-%d %H:%M')), '',
           'Machine: %s.  Load average (1 min) at the start: %s, at the '
           'end: %.2f (the machine is shared with other sessions\' test '
           'runs: figures vary between runs).' % (
               machine(), args.load, os.getloadavg()[0]), '',
           'Versions: %s.' % ', '.join('%s %s' % kv for kv in
                                       versions().items()), '',
           'Drain: %d no-op jobs (%d on RelStorage); remotetask\'s workers '
           'start first and the jobs are enqueued once they run (1,000 per '
           'transaction), the peers\' jobs are enqueued first and their '
           'workers started then; rate between'
           ' the first and the last finished job seen by a poller.  Round '
           'trip: one job at a time with one idle worker running, enqueue '
           '-> result seen by the client, %d samples.  remotetask workers '
           'are `Processor` processes (one thread each, default `--batch '
           'auto` unless the row says batch=1); on FileStorage, '
           'which serves one process, they are threads of one in-process '
           'Processor.  Idle workers are woken by ZODB invalidations '
           '(FileStorage, ZEO) or by PostgreSQL NOTIFY (RelStorage: '
           '`remotetask.pgnotify`), and look for work once a second '
           'besides; the client polls the job\'s status every 0.5 ms '
           '(on RelStorage each poll is a new transaction, one query); '
           'bench/roundtrip.py splits the RelStorage round trip into its '
           'phases.' % (
               args.n, args.n_rel, args.samples), '',
           '| system | enqueue 1/txn jobs/s | enqueue 1000/txn jobs/s | '
           'drain 1 worker jobs/s | drain 4 workers jobs/s | round trip p50 '
           'ms | p95 ms |',
           '|---|---|---|---|---|---|---|']
    for r in rows:
        out.append('| %s | %s | %s | %s | %s | %s | %s |' % (
            r['system'], fmt(r.get('enq1')), fmt(r.get('enq1000')),
            fmt(r.get('drain1')), fmt(r.get('drain4')),
            fmt(r.get('p50'), 'ms'), fmt(r.get('p95'), 'ms')))
    served = [(k[1], v) for k, v in extra.items() if k[0] == 'serve' and v]
    if served:
        out += ['', 'Round trip through `remotetask serve` (POST /api/jobs, '
                'then GET /api/jobs/ID until completed, keep-alive HTTP, '
                'its in-process Processor), %d samples:' % args.samples, '',
                '| storage | p50 ms | p95 ms |', '|---|---|---|']
        for kind, (p50, p95) in served:
            out.append('| %s | %.1f | %.1f |' % (kind, p50 * 1000,
                                                 p95 * 1000))
    cost = [(k[1], v) for k, v in extra.items() if k[0] == 'cost']
    if cost:
        out += ['', 'Cost per operation on FileStorage (%d operations; '
                'claim+run = the two transactions a worker commits):' %
                args.ops, '', '| jobs queued | add us | claim+run us |',
                '|---|---|---|']
        for queued, (add, run) in sorted(cost):
            out.append('| %d | %s | %s |' % (queued, fmt(add, 'us'),
                                             fmt(run, 'us')))
    out += ['', '## Targets', '', '| target | measured | against | |',
            '|---|---|---|---|'] + targets(rows, extra)
    if cold:
        out += [''] + list(cold)
    if notes:
        out += ['', '## Notes', ''] + ['- ' + n for n in notes]
    extra_notes = os.path.join(HERE, 'notes.md')
    if os.path.exists(extra_notes):
        with open(extra_notes) as f:
            out += ['', f.read().strip()]
    text = '\n'.join(out) + '\n'
    # The other benches (producers, startup, soak, crashwindow...) and the
    # hand-written records keep sections of their own in the same file:
    # every '## ' section of the old file that this run did not write is
    # kept, in its order, after this run's part.
    kept = keptSections(path, text)
    if kept:
        text += '\n' + kept
    with open(path, 'w') as f:
        f.write(text)
    print(text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true',
                        help='fewer jobs (about a minute)')
    parser.add_argument('--skip-peers', action='store_true')
    parser.add_argument('--skip-cold', action='store_true',
                        help='no cold-start scenario (bench/coldstart.py)')
    parser.add_argument('--skip-scaling', action='store_true',
                        help='no 4-against-1 scenario (bench/scaling.py)')
    parser.add_argument('--stores', default='file,zeo,relstorage')
    parser.add_argument('--output', default=os.path.join(HERE,
                                                         'RESULTS.md'))
    args = parser.parse_args(argv)
    args.n = 500 if args.quick else 2000
    args.n_rel = 200 if args.quick else 300
    args.enqueue = 300 if args.quick else 2000
    args.enqueue_batch = 5000 if args.quick else 50000
    args.samples = 30 if args.quick else 100
    args.sleep_jobs = 200 if args.quick else 800
    args.big = 20000 if args.quick else 100000
    args.ops = 100 if args.quick else 300
    rows, extra, notes = [], {}, []
    args.load = '%.2f' % os.getloadavg()[0]
    workdir = tempfile.mkdtemp(prefix='remotetask-bench-')
    for kind in args.stores.split(','):
        if kind == 'relstorage':
            reason = measure.testing.postgresAvailable()
            if reason:
                notes.append('RelStorage skipped: %s' % reason)
                continue
        try:
            benchStore(kind, args, workdir, rows, extra, notes)
        except Exception:
            notes.append('remotetask %s failed: %s' % (
                kind, traceback.format_exc().strip().splitlines()[-1]))
            traceback.print_exc()
    if not args.skip_peers:
        notes.append('Redis: %s.' % measure.startRedis())
        for name in ('huey', 'rq', 'celery'):
            try:
                benchPeer(name, args, rows)
            except Exception:
                notes.append('%s failed: %s' % (name, traceback.format_exc(
                ).strip().splitlines()[-1]))
                traceback.print_exc()
    cold = []
    if not args.skip_cold:
        sizes = [1000, 3000] if args.quick else [3000, 30000]
        systems = [s for s in coldstart.SYSTEMS if not args.skip_peers
                   or s.startswith('remotetask')]
        try:
            results, enqueued = coldstart.measure(sizes, 1, systems, workdir)
            cold = coldstart.section(results, enqueued, sizes, systems, 1,
                                     args.load)
        except Exception:
            notes.append('cold start failed: %s' % (
                traceback.format_exc().strip().splitlines()[-1]))
            traceback.print_exc()
    if not args.skip_scaling:
        options = argparse.Namespace(
            runs=1 if args.quick else 2, jobs=1000 if args.quick else 3000,
            sleep_jobs=args.sleep_jobs // 2 if args.quick else 600,
            scenarios=list(scaling.SCENARIOS), before=None)
        try:
            found, sources = scaling.measure(options)
            cold.append(scaling.section(found, sources, options))
        except Exception:
            notes.append('scaling failed: %s' % (
                traceback.format_exc().strip().splitlines()[-1]))
            traceback.print_exc()
    if args.quick:
        notes.append('--quick: %d jobs per drain, cost measured with %d '
                     'queued instead of 100,000.' % (args.n, args.big))
    write(args.output, rows, extra, args, notes, cold)


if __name__ == '__main__':
    main()

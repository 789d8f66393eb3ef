"""The cost of keeping statistics (remotetask.stats), with and without them,
in one run (rounds alternate, so the load of the shared machine weighs on
both alike; compare the ratios, not figures across runs):

    python bench/stats.py [--jobs 2000] [--rounds 3] [--zeo-jobs 2000]
                          [--zeo-rounds 2] [--output bench/RESULTS-stats.md]

1. Cost per job on FileStorage, two ways, each with statistics on and off
   (off: ``stats.record`` replaced by a no-op in this process; the service
   is the same):
   - ``processor``: a Processor (1 thread, ``--batch auto``, as `remotetask
     worker` runs) drains ``--jobs`` no-op jobs enqueued beforehand;
   - ``claim+run``: one job claimed and run per transaction in this
     process (the worst case for a fixed per-run cost: the smallest
     transactions, a FileStorage commit each).
   The figure: jobs/s (median of the rounds), the ratio on/off of each
   round, and the cost per job: 1/rate(on) - 1/rate(off).
2. Four worker processes over ZEO drain ``--zeo-jobs`` no-op jobs, with
   statistics on and off (off: the workers replace ``stats.record`` by a
   no-op): drain rate and the share of their transactions retried after a
   conflict.  Every end of a run writes the same minute slot, hour slot
   and totals in every worker: they resolve (``Slot._p_resolveConflict``
   in the ZEO server), so the retried share must stay what it is without
   statistics.
"""
import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import measure  # noqa: E402  (puts src/ on sys.path)
from remotetask import stats  # noqa: E402

RECORD = stats.record


def statistics_on(on):
    stats.record = RECORD if on else (lambda *args, **kw: None)


# -- 1. cost per job on FileStorage ---------------------------------------------

def processorDrain(store, n):
    from remotetask.processor import Processor
    store.clean()
    base = store.count()
    store.enqueue(n, 1000)
    processor = Processor(store.db, concurrency=1, lease=60.0,
                          maintenance_interval=30.0)
    started, cpu = time.perf_counter(), time.process_time()
    processor.start()
    try:
        deadline = time.monotonic() + 300
        while store.count() - base < n:
            if time.monotonic() > deadline:
                raise TimeoutError('drain did not finish')
            time.sleep(0.01)
        return (n / (time.perf_counter() - started),
                (time.process_time() - cpu) / n)
    finally:
        processor.stop(timeout=30)


def claimRunDrain(store, n):
    store.clean()
    base = store.count()
    store.enqueue(n, 1000)

    def step(service):
        claimed = service.claim(worker='bench', lease=60, limit=1)
        for job in claimed:
            service.run(job)
        return len(claimed)
    started, cpu = time.perf_counter(), time.process_time()
    done = 0
    while done < n:
        done += store.transact(step)
    rate = n / (time.perf_counter() - started)
    cpu = (time.process_time() - cpu) / n
    assert store.count() - base == n
    return rate, cpu


def fileRounds(n, rounds, workdir, log):
    results = {'processor': [], 'claim+run': []}
    with measure.Store('file', workdir) as store:
        claimRunDrain(store, 200)   # warm up: imports, caches
        processorDrain(store, 200)
        for r in range(rounds):
            for kind, drain in (('processor', processorDrain),
                                ('claim+run', claimRunDrain)):
                pair = {}
                order = (True, False) if r % 2 == 0 else (False, True)
                for on in order:
                    statistics_on(on)
                    try:
                        pair[on] = drain(store, n)
                    finally:
                        statistics_on(True)
                    log('round %d %s statistics %s: %.0f jobs/s, %.0f us '
                        'CPU per job' % (r + 1, kind, 'on' if on else 'off',
                                         pair[on][0], pair[on][1] * 1e6))
                results[kind].append(pair)
        minutes = stats.series(store.service, stats.MINUTE, 60)
        log('counted by the statistics in the last hour: %d completed'
            % sum(minutes['completed']))
    return results


# -- 2. four workers over ZEO ---------------------------------------------------

class ZEOWorkers(measure.Workers):
    """measure.Workers, each process with statistics on or off."""

    def __init__(self, store, n, on):
        super().__init__(store, n)
        self.on = on

    def argv(self, statsfile):
        return [sys.executable, os.path.abspath(__file__), 'worker',
                'on' if self.on else 'off', self.store.uri, statsfile]


def zeoDrain(store, n, on):
    store.clean()
    base = store.count()
    with ZEOWorkers(store, 4, on) as w:
        store.enqueue(n, 1000)
        rate = measure.drainRate(lambda: store.count() - base, n)
    conflicts = w.stats.get('conflicts', 0)
    commits = w.stats.get('commits', 0)
    return rate, conflicts / max(1, commits + conflicts), conflicts, commits


def zeoRounds(n, rounds, workdir, log):
    results = []
    with measure.Store('zeo', workdir) as store:
        for r in range(rounds):
            order = (True, False) if r % 2 == 0 else (False, True)
            pair = {}
            for on in order:
                pair[on] = zeoDrain(store, n, on)
                log('round %d zeo 4 workers statistics %s: %.0f jobs/s, '
                    '%.1f%% retried (%d conflicts, %d commits)'
                    % ((r + 1, 'on' if on else 'off', pair[on][0],
                        100 * pair[on][1]) + pair[on][2:]))
            results.append(pair)
        store.tm.begin()
        totals = stats.totals(store.service).get('scale.noop', {})
        store.tm.abort()
        log('statistics totals: %d completed (statistics on: %d rounds of '
            '%d jobs)' % (totals.get('completed', 0), rounds, n))
    return results


def worker(on, uri, statsfile):
    statistics_on(on == 'on')
    from remotetask.tests import scale_agents
    return scale_agents.process(uri, statsfile, 60.0, 'auto')


# -- report ------------------------------------------------------------------------

def loadavg():
    try:
        return os.getloadavg()[0]
    except OSError:
        return float('nan')


def report(args, files, zeo, load0, load1):
    now = datetime.datetime.now(datetime.timezone.utc)
    lines = [
        '# Statistics: the cost of keeping them (bench/stats.py)', '',
        'Written by `python bench/stats.py --jobs %d --rounds %d --zeo-jobs '
        '%d --zeo-rounds %d` on %s.' % (args.jobs, args.rounds,
                                        args.zeo_jobs, args.zeo_rounds,
                                        now.strftime('%Y-%m-%d %H:%M UTC')),
        '',
        'Machine: %s, %d cores; load average (1 min) %.2f at the start, '
        '%.2f at the end: the machine is shared with other sessions\' '
        'test runs and benchmarks, so the figures move between runs; the '
        'rounds alternate on/off so that the load weighs on both alike: '
        'compare the ratios of a round.' % (
            measure_platform(), os.cpu_count(), load0, load1), '',
        '## Cost per job, FileStorage, one process', '',
        '| drain | measure | statistics on | off | on/off per round | '
        'cost per job | < 10 % |',
        '|---|---|---|---|---|---|---|']
    for kind, pairs in files.items():
        for label, index in (('jobs/s (wall clock)', 0),
                             ('CPU us per job', 1)):
            on = statistics.median(p[True][index] for p in pairs)
            off = statistics.median(p[False][index] for p in pairs)
            ratios = [p[True][index] / p[False][index] for p in pairs]
            if index == 0:
                cost = 1 / on - 1 / off
                share = [1 / r - 1 for r in ratios]
                shown = '%.0f' % on, '%.0f' % off
            else:
                cost = on - off
                share = [r - 1 for r in ratios]
                shown = '%.0f' % (on * 1e6), '%.0f' % (off * 1e6)
            more = statistics.median(share)
            lines.append('| %s | %s | %s | %s | %s | %+.0f us (%+.1f%%) | %s |'
                         % ((kind, label) + shown + (
                             ', '.join('%.3f' % r for r in ratios),
                             cost * 1e6, 100 * more,
                             'met' if more < 0.10 else 'MISSED')))
    lines += ['', 'processor: a Processor (1 thread, batch auto) drains %d '
              'no-op jobs enqueued beforehand; claim+run: one job claimed '
              'and run per transaction (a FileStorage commit each), the '
              'worst case for a fixed cost per run. Statistics off: '
              '`stats.record` replaced by a no-op (the same service). '
              'Cost per job: the median over the rounds of the time per '
              'job with statistics over the time without, minus one (wall '
              'clock: from the drain rates; CPU: `time.process_time()` of '
              'this process, all its threads, per job: what the load of '
              'the other sessions disturbs least).' % args.jobs, '']
    if zeo:
        lines += ['## Four workers over ZEO', '',
                  '| round | statistics | drain jobs/s | retried '
                  'transactions | conflicts / commits |',
                  '|---|---|---|---|---|']
        for r, pair in enumerate(zeo):
            for on in (True, False):
                rate, share, conflicts, commits = pair[on]
                lines.append('| %d | %s | %.0f | %.1f%% | %d / %d |' % (
                    r + 1, 'on' if on else 'off', rate, 100 * share,
                    conflicts, commits))
        on = statistics.median(p[True][1] for p in zeo)
        off = statistics.median(p[False][1] for p in zeo)
        lines += ['', 'Median retried share: %.1f%% with statistics, %.1f%% '
                  'without (4 worker processes, `--batch auto`, %d no-op '
                  'jobs per drain, enqueued 1,000 per transaction once the '
                  'workers run). Rate: median %.0f jobs/s with, %.0f '
                  'without.' % (100 * on, 100 * off, args.zeo_jobs,
                                statistics.median(p[True][0] for p in zeo),
                                statistics.median(p[False][0] for p in zeo)),
                  '']
    return '\n'.join(lines) + '\n'


def measure_platform():
    import platform
    return platform.platform()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == 'worker':
        return worker(*argv[1:4])
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--jobs', type=int, default=2000)
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--zeo-jobs', type=int, default=2000)
    parser.add_argument('--zeo-rounds', type=int, default=2)
    parser.add_argument('--output', default=os.path.join(
        HERE, 'RESULTS-stats.md'))
    args = parser.parse_args(argv)
    load0 = loadavg()
    with tempfile.TemporaryDirectory() as workdir:
        files = fileRounds(args.jobs, args.rounds, workdir, print)
        zeo = (zeoRounds(args.zeo_jobs, args.zeo_rounds, workdir, print)
               if args.zeo_rounds else [])
    text = report(args, files, zeo, load0, loadavg())
    with open(args.output, 'w') as f:
        f.write(text)
    print(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())

"""A group's fan-in under load: ``service.group(N no-op jobs, then=...)``
drained by W worker processes over ZEO, against the same N jobs added
without the group, in the same run (alternating, so the machine's load
hits both alike).

    python bench/workflows.py [--jobs 10000] [--workers 4] [--rounds 2]

Both add their jobs in one transaction once the workers run.  For each
run: the time to add the jobs, the drain rate (jobs/s
between the first and the last finished job a poller saw), the share of
the workers' transactions that were retried (conflicts), and for the group
how long after its last job completed the ``then`` was queued and done.
Prints a Markdown table (paste it into bench/RESULTS.md).
"""
import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from measure import Store, drainRate  # noqa: E402  (puts src on the path)

from remotetask.interfaces import COMPLETED  # noqa: E402


def plainRun(store, n, workers):
    store.clean()
    base = store.count()
    with store.workers(workers) as w:
        started = time.perf_counter()
        store.transact(lambda service: [service.add('scale.noop', i)
                                        for i in range(n)])
        added = time.perf_counter() - started
        rate = drainRate(lambda: store.count() - base, n, timeout=900)
    return summary(w.stats, rate, added)


def groupRun(store, n, workers):
    store.clean()
    base = store.count()
    steps = [('scale.noop', i) for i in range(n)]
    with store.workers(workers) as w:
        started = time.perf_counter()
        ids, then = store.transact(
            lambda service: service.group(steps, then=('scale.noop', None)))
        added = time.perf_counter() - started
        rate = drainRate(lambda: store.count() - base, n + 1, timeout=900)
    result = summary(w.stats, rate, added)
    store.tm.begin()
    service = store.service
    job = service.jobs[then]
    assert job.status == COMPLETED, job.status
    assert job.output == list(range(n)), 'the then got the wrong input'
    assert len(job.attempts) == 1, job.attempts
    last = max(service.jobs[i].completed for i in ids)
    result['then_done_ms'] = (job.completed - last) * 1000
    store.tm.abort()
    return result


def summary(stats, rate, added):
    conflicts = stats.get('conflicts', 0)
    commits = stats.get('commits', 0)
    return {'rate': rate, 'added_s': added, 'conflicts': conflicts,
            'commits': commits,
            'retry': conflicts / max(1, commits + conflicts)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--jobs', type=int, default=10000)
    parser.add_argument('--workers', type=int, default=4)
    parser.add_argument('--rounds', type=int, default=2)
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory(prefix='rt-bench-wf-') as workdir:
        with Store('zeo', workdir) as store:
            for r in range(args.rounds):
                for kind, func in (('plain', plainRun), ('group', groupRun)):
                    result = func(store, args.jobs, args.workers)
                    result.update(kind=kind, round=r + 1)
                    rows.append(result)
                    print(kind, r + 1, {k: round(v, 3) if isinstance(
                        v, float) else v for k, v in result.items()},
                        flush=True)
    print()
    print('Run of %s UTC on %s, %d cores, Python %s; load average (1 min) '
          'at the start %.2f, at the end %.2f.' % (
              time.strftime('%Y-%m-%d %H:%M', time.gmtime()),
              platform.platform(), os.cpu_count(),
              platform.python_version(), load, os.getloadavg()[0]))
    print()
    print('| round | jobs | add s | drain jobs/s | worker txns retried | '
          'then done after last job ms |')
    print('|---|---|---|---|---|---|')
    for row in rows:
        print('| %d | %s | %.2f | %.0f | %.1f %% (%d of %d) | %s |' % (
            row['round'], '%d plain' % args.jobs if row['kind'] == 'plain'
            else '%d in a group + then' % args.jobs, row['added_s'],
            row['rate'], 100 * row['retry'], row['conflicts'],
            row['conflicts'] + row['commits'],
            '%.0f' % row['then_done_ms'] if 'then_done_ms' in row else ''))
    ratios = [g['rate'] / p['rate'] for p, g in zip(rows[::2], rows[1::2])]
    print()
    print('Drain rate group / plain, per round: %s (median %.2f)' % (
        ', '.join('%.2f' % r for r in ratios), statistics.median(ratios)))


if __name__ == '__main__':
    main()

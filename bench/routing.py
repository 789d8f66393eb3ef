"""Routing: the cost of add and claim with priorities and 10 queues, against
plain jobs (every job in the 'default' queue at priority 0), in one run.

    python bench/routing.py [--jobs 2000] [--rounds 3] [--drain 2000]
                            [--output bench/RESULTS-routing.md]

Scenarios, each on a FileStorage service of its own, run operation by
operation in turn (an add to each, the next add to each...; then a claim
from each...), so that the load of the shared machine weighs on each
alike; compare the ratios of one round, not figures across runs:

- ``plain``: every job in the default queue at priority 0 (what every
  job was before routing);
- ``priorities``: priorities drawn from 0..9 (10 lanes of one queue);
- ``10 queues``: 10 queues, priorities drawn from 0..2 (30 lanes); claims
  without a queue list (every queue, by priority);
- ``10 queues, listed``: the same jobs, claimed by a worker that names the
  10 queues (``claim(queues=[...])``, first drained first).

``add``: one job per transaction (a FileStorage commit each), with a backlog
of ``--jobs`` jobs.  ``claim+run``: claim one job and run it in one
transaction, until the backlog is drained (``claim(spread=True)``, as
processors claim); ``add()`` and ``claim()``: the calls alone, without
the commit (what routing changes: finding the lane, the due entry, the
checks; the commit's fsync dominates the rest and is what moves most on a
shared machine).  The figures are per operation, in ms (median of the
round's per-batch timings), and the ratio to ``plain`` of the same round.

``--drain N``: 4 worker processes over ZEO drain N jobs, plain and in 10
queues with priorities, alternately; their retried transactions (conflicts)
over all their transactions, as in bench/run.py.
"""
import argparse
import datetime
import os
import random
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import measure  # noqa: E402
import transaction  # noqa: E402
import ZODB  # noqa: E402
import ZODB.FileStorage  # noqa: E402

from remotetask.service import TaskService  # noqa: E402

TASK = 'scale.noop'
QUEUES = ['q%d' % i for i in range(10)]
KINDS = ('plain', 'priorities', '10 queues', '10 queues, listed')


def routes(kind, n, seed=1):
    rng = random.Random(seed)
    if kind == 'plain':
        return [{} for i in range(n)]
    if kind == 'priorities':
        return [{'priority': rng.randrange(10)} for i in range(n)]
    return [{'queue': rng.choice(QUEUES), 'priority': rng.randrange(3)}
            for i in range(n)]


class Scenario:
    """One FileStorage service whose jobs are routed as ``kind``."""

    def __init__(self, kind, n, workdir):
        self.kind = kind
        path = os.path.join(workdir, 'routing-%s.fs' % kind.replace(
            ' ', '-').replace(',', ''))
        for suffix in ('', '.index', '.lock', '.tmp'):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
        self.db = ZODB.DB(ZODB.FileStorage.FileStorage(path))
        self.tm = transaction.TransactionManager()
        self.conn = self.db.open(self.tm)
        with self.tm:
            self.conn.root()['tasks'] = TaskService()
        self.service = self.conn.root()['tasks']
        self.routes = routes(kind, n)
        self.queues = QUEUES if kind == '10 queues, listed' else None
        self.adds, self.addCalls, self.claims, self.calls = [], [], [], []

    def add(self, i):
        started = time.perf_counter()
        with self.tm:
            self.service.add(TASK, None, **self.routes[i])
            self.addCalls.append(time.perf_counter() - started)
        self.adds.append(time.perf_counter() - started)

    def claim(self):
        started = time.perf_counter()
        with self.tm:
            claimed = self.service.claim(worker='bench', lease=60,
                                         spread=True, queues=self.queues)
            call = time.perf_counter() - started
            for job in claimed:
                self.service.run(job)
        if claimed:
            self.calls.append(call)
            self.claims.append(time.perf_counter() - started)
        return bool(claimed)

    def figures(self):
        return tuple(statistics.median(values) * 1000 for values in
                     (self.adds, self.addCalls, self.claims, self.calls))

    def close(self):
        self.tm.abort()
        self.conn.close()
        self.db.close()


def round_(n, workdir):
    """The four scenarios, operation by operation in turn (an add to each,
    then the next add...; then a claim from each...), so that the load of
    the machine weighs on each alike."""
    scenarios = [Scenario(kind, n, workdir) for kind in KINDS]
    try:
        for i in range(n):
            for s in scenarios:
                s.add(i)
        active = list(scenarios)
        while active:
            active = [s for s in active if s.claim()]
        for s in scenarios:
            assert len(s.claims) == n, (s.kind, len(s.claims))
        return {s.kind: s.figures() for s in scenarios}
    finally:
        for s in scenarios:
            s.close()


def drain(store, n, routed):
    """4 worker processes over ZEO drain ``n`` jobs; (jobs/s, share of
    retried transactions)."""
    store.clean()
    base = store.count()
    kws = routes('10 queues' if routed else 'plain', n, seed=2)

    def add(service, first):
        for i in range(first, min(n, first + 1000)):
            service.add(TASK, i, **kws[i])
    with store.workers(4) as w:
        for first in range(0, n, 1000):
            store.transact(add, first)
        rate = measure.drainRate(lambda: store.count() - base, n)
    stats = w.stats
    conflicts = stats.get('conflicts', 0)
    return rate, conflicts / max(1, stats.get('commits', 0) + conflicts)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--jobs', type=int, default=2000)
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--drain', type=int, default=2000,
                        help='jobs per ZEO drain (0: skip)')
    parser.add_argument('--drain-rounds', type=int, default=2)
    parser.add_argument('--output', default=None)
    args = parser.parse_args(argv)
    rows = {kind: [] for kind in KINDS}
    workdir = tempfile.mkdtemp(prefix='bench-routing-')
    for r in range(args.rounds):
        figures = round_(args.jobs, workdir)
        for kind in KINDS:
            rows[kind].append(figures[kind])
            print('round %d %-18s add %.3f ms  add() %.3f ms  claim+run '
                  '%.3f ms  claim() %.3f ms' % (r + 1, kind, *rows[kind][-1]),
                  flush=True)
    drains = {False: [], True: []}
    if args.drain:
        with measure.Store('zeo', workdir) as store:
            for r in range(args.drain_rounds):
                for routed in (False, True):
                    drains[routed].append(drain(store, args.drain, routed))
                    print('drain %s: %.0f jobs/s, %.1f %% retried' % (
                        'routed' if routed else 'plain',
                        drains[routed][-1][0], 100 * drains[routed][-1][1]),
                        flush=True)
    text = report(rows, drains, args)
    print(text)
    if args.output:
        with open(args.output, 'a') as f:
            f.write(text)


def _range(values, fmt):
    lo, hi = min(values), max(values)
    return fmt % lo if lo == hi else (fmt + '-' + fmt) % (lo, hi)


def report(rows, drains, args):
    lines = ['', '## Routing: add and claim with priorities and 10 queues '
             '(%s)' % datetime.date.today().isoformat(), '',
             '`python bench/routing.py --jobs %d --rounds %d --drain %d` on '
             '%s, load average %s at the end. %d jobs per scenario, '
             'FileStorage, one job per transaction; ms per operation '
             '(median), and the ratio to `plain` in the same round (range '
             'over %d rounds).' % (
                 args.jobs, args.rounds, args.drain, measure_machine(),
                 ' '.join('%.1f' % x for x in os.getloadavg()), args.jobs,
                 args.rounds), '',
             ]
    if rows['plain']:
        lines += ['| jobs | add+commit ms | / plain | add() ms | / plain | '
                  'claim+run+commit ms | / plain | claim() ms | / plain |',
                  '|---|---|---|---|---|---|---|---|---|']
    plain = rows['plain']
    for kind in KINDS if plain else ():
        cells = [kind]
        for i in range(4):
            values = [row[i] for row in rows[kind]]
            ratios = [row[i] / p[i] for row, p in zip(rows[kind], plain)]
            cells += [_range(values, '%.3f'), _range(ratios, '%.2fx')]
        lines.append('| ' + ' | '.join(cells) + ' |')
    if drains[False]:
        lines += ['', '4 worker processes over ZEO, %d no-op jobs, '
                  'alternately plain and in 10 queues with priorities 0-2 '
                  '(workers take every queue):' % args.drain, '',
                  '| jobs | drain jobs/s | retried transactions |',
                  '|---|---|---|']
        for routed in (False, True):
            lines.append('| %s | %s | %s |' % (
                '10 queues x 3 priorities' if routed else 'plain',
                _range([r for r, c in drains[routed]], '%.0f'),
                _range([100 * c for r, c in drains[routed]], '%.1f %%')))
    lines.append('')
    return '\n'.join(lines)


def measure_machine():
    import platform
    return '%s, %d cores, Python %s' % (platform.node(), os.cpu_count(),
                                        platform.python_version())


if __name__ == '__main__':
    main()

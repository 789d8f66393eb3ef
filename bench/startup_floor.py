"""The floor under `status` and a worker's start (issue 10, docs/startup.md).

    python bench/startup_floor.py [--before COMMIT] [--runs N]

Same trees as ``bench/startup.py`` (COMMIT, default 32b0aca, and this
checkout, both compiled to bytecode).  Prints two Markdown tables:

- the CPU time (user + system) of processes that only import what every
  command that opens a FileStorage must import (the ZODB, BTrees, click...),
  next to ``status`` and a worker's start (to "processor started") before
  and after, interleaved, medians and minimums of N;
- ``-X importtime`` of the same starts, the self times summed by group
  (the ZODB and its packages, zope.*, click, remotetask's own modules, the
  rest), medians of N, milliseconds.
"""
import argparse
import collections
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from startup import WORKER_CPU, _childrenCPU, env, makeTrees, prepare  # noqa

GROUPS = (
    ('ZODB, BTrees, persistent, transaction, zodbpickle, zc',
     ('ZODB', 'BTrees', 'persistent', 'transaction', 'zodbpickle', 'zc')),
    ('zope.*', ('zope',)),
    ('click', ('click',)),
    ('remotetask.*', ('remotetask',)),
)
REST = 'the rest (stdlib, site; before: pyramid, webob, pkg_resources)'


def cpu(argv, src, cwd):
    before = _childrenCPU()
    subprocess.run([sys.executable] + argv, env=env(src), cwd=cwd,
                   check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=60)
    return _childrenCPU() - before


def importGroups(argv, src, cwd):
    out = subprocess.run([sys.executable, '-X', 'importtime'] + argv,
                         env=env(src), cwd=cwd, capture_output=True,
                         text=True, timeout=60)
    groups = collections.Counter()
    for line in out.stderr.splitlines():
        if not line.startswith('import time:') or 'self [us]' in line:
            continue
        own, _, name = line[len('import time:'):].split('|')
        top = name.strip().split('.')[0]
        label = next((g for g, tops in GROUPS if top in tops), REST)
        groups[label] += int(own)
        groups['total'] += int(own)
    if not groups:
        raise RuntimeError(out.stderr[-2000:])
    return groups


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--before', default='32b0aca')
    parser.add_argument('--runs', type=int, default=9)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trees = makeTrees(tmp, args.before)
        dbs = {}
        for name, src in trees.items():
            os.makedirs(os.path.join(tmp, 'run-' + name))
            dbs[name] = prepare(src, os.path.join(tmp, 'run-' + name))

        def worker(name, code):
            return ['-c', code, 'worker', '--db', dbs[name], '--import',
                    'remotetask.tracker']

        after = trees['after']
        cases = [
            ('python -c pass', after, ['-c', 'pass']),
            ('python -S -c pass (no site .pth files)', after,
             ['-S', '-c', 'pass']),
            ('import ZODB, ZODB.FileStorage', after,
             ['-c', 'import ZODB, ZODB.FileStorage']),
            ('import click, ZODB, ZODB.FileStorage, zope.component; '
             'os._exit (no finalization)', after,
             ['-c', 'import click, ZODB, ZODB.FileStorage, zope.component,'
              ' os; os._exit(0)']),
        ]
        for name in ('before', 'after'):
            cases.append(('%s: status 1' % name, trees[name],
                          ['-m', 'remotetask', 'status', '--db', dbs[name],
                           '1']))
            cases.append(('%s: worker to "processor started"' % name,
                          trees[name], worker(name, WORKER_CPU)))
        load0 = os.getloadavg()[0]
        times = collections.defaultdict(list)
        imports = collections.defaultdict(list)
        for i in range(args.runs):
            for label, src, argv in cases:
                times[label].append(cpu(argv, src, tmp))
        for i in range(args.runs):
            for label, src, argv in cases:
                if 'pass' not in label:
                    imports[label].append(importGroups(argv, src, tmp))
        load1 = os.getloadavg()[0]
    print('Written by `python bench/startup_floor.py --before %s --runs %d` '
          'on %s; load average %.2f -> %.2f.' % (
              args.before, args.runs,
              time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()), load0,
              load1))
    print()
    print('| CPU time (user + system), s | median | min |')
    print('|---|---|---|')
    for label, _, _ in cases:
        print('| %s | %.3f | %.3f |' % (label, statistics.median(
            times[label]), min(times[label])))
    print()
    columns = ['total'] + [g for g, _ in GROUPS] + [REST]
    print('| -X importtime, self times summed, ms | %s |'
          % ' | '.join(columns))
    print('|---|%s' % ('---|' * len(columns)))
    for label, found in imports.items():
        print('| %s | %s |' % (label, ' | '.join(
            '%.0f' % (statistics.median([g[c] for g in found]) / 1000)
            for c in columns)))


if __name__ == '__main__':
    main()

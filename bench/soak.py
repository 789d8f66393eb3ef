"""Soak benchmark (issue 17): many no-op jobs through one worker with
completed jobs kept 0 s and a pack every so often; the Data.fs size after
each pack and the worker's RSS as the jobs go by.

    python bench/soak.py [--jobs 200000] [--pack-every 60] [--write]

A ZEO server (runzeo, started here on 127.0.0.1) holds a FileStorage; one
``remotetask worker`` process (one thread, ``--batch auto``) runs the jobs;
this script adds them 1,000 per transaction, keeping at most ``--backlog``
waiting, and packs the storage every ``--pack-every`` seconds with
``remotetask pack --db zeo://...`` (as a cron job would).  First a baseline:
1,000 jobs, then a pack: the size of the file "with 1,000 jobs".  With
``--write`` the figures are appended to bench/RESULTS.md.
"""
import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time

import transaction

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, 'src'))

from remotetask import db as dbmod  # noqa: E402
from remotetask import retention, testing  # noqa: E402
from remotetask.tests import uptimetasks  # noqa: E402,F401  (tasks)

#: Jobs added per transaction after the first 1,000.
BATCH = 200


def rssMB(pid):
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024.0
    return None


class Soak:
    def __init__(self, uri, path):
        self.uri = uri
        self.path = path
        self.db = dbmod.openDB(uri)
        self.tm = transaction.TransactionManager()
        self.conn = self.db.open(self.tm)
        self.added = 0
        self.tries = 0
        self.transactions = 0

    def service(self):
        self.tm.begin()
        return dbmod.getService(self.conn, 'tasks', create=True)

    def setUp(self):
        service = self.service()
        service.retention['completed'] = 0
        self.tm.commit()

    def add(self, count):
        # (Adds conflict with the worker's expiry steps when both change
        # the structure of the jobs tree: retried, counted.)
        for attempt in self.tm.attempts(100):
            with attempt:
                self.tries += 1
                service = dbmod.getService(self.conn, 'tasks')
                for n in range(count):
                    service.add('noop', None)
        self.transactions += 1
        self.added += count

    def state(self):
        service = self.service()
        counts = service.counts()
        removed = retention.removedCounts(service)['retention']
        self.tm.abort()
        return counts, removed

    def pack(self):
        started = time.monotonic()
        subprocess.run(testing.remotetaskCommand('pack', '--db', self.uri),
                       env=testing.subprocessEnv(), check=True,
                       capture_output=True, timeout=600)
        return os.path.getsize(self.path), time.monotonic() - started


def run(jobs, packEvery, backlog):
    tmp = tempfile.mkdtemp(prefix='remotetask-soak-')
    path = os.path.join(tmp, 'Data.fs')
    server = testing.ZEOServer(path).start()
    worker = None
    samples = {}
    packs = []
    try:
        soak = Soak(server.uri, path)
        soak.setUp()
        log = open(os.path.join(tmp, 'worker.log'), 'wb')
        worker = subprocess.Popen(
            testing.remotetaskCommand(
                'worker', '--db', server.uri, '--import',
                'remotetask.tests.uptimetasks', '--log-level', 'WARNING'),
            env=testing.subprocessEnv(), stdout=log, stderr=subprocess.STDOUT)
        started = time.monotonic()
        lastPack = time.monotonic()
        baseline = None
        marks = [1000, 10000, 50000, 100000, 150000, jobs]
        while True:
            counts, removed = soak.state()
            done = counts['completed'] + removed
            waiting = counts['queued'] + counts['delayed']
            if baseline is None and done >= 1000:
                # Everything expired, then a pack: the size with 1,000 jobs.
                while soak.state()[1] < 1000:
                    time.sleep(0.2)
                baseline = soak.pack()[0]
                print('baseline after 1,000 jobs and a pack: %d bytes'
                      % baseline, flush=True)
                lastPack = time.monotonic()
            for mark in list(marks):
                if done >= mark:
                    samples[mark] = (rssMB(worker.pid),
                                     os.path.getsize(path),
                                     time.monotonic() - started)
                    print('%d jobs done: worker RSS %.1f MB, Data.fs %d '
                          'bytes, %.0f s' % ((mark,) + samples[mark]),
                          flush=True)
                    marks.remove(mark)
            if done >= jobs:
                break
            if soak.added < max(jobs, 1000) and waiting < backlog:
                soak.add(min(BATCH, jobs - soak.added) if soak.added >= 1000
                         else 1000)
                if soak.added == 1000:
                    while soak.state()[1] < 1000:
                        time.sleep(0.1)
                    continue
            else:
                time.sleep(0.05)
            if baseline is not None and time.monotonic() - lastPack \
                    >= packEvery:
                size, seconds = soak.pack()
                counts, removed = soak.state()
                packs.append((counts['completed'] + removed, size, seconds))
                print('pack at %d jobs done: Data.fs %d bytes (%.1f s)'
                      % packs[-1], flush=True)
                lastPack = time.monotonic()
        # The end: wait for the last removals, pack once more.
        deadline = time.monotonic() + 120
        while soak.state()[1] < jobs and time.monotonic() < deadline:
            time.sleep(0.2)
        size, seconds = soak.pack()
        packs.append((jobs, size, seconds))
        print('final pack: Data.fs %d bytes' % size, flush=True)
        elapsed = time.monotonic() - started
        counts, removed = soak.state()
        soak.conn.close()
        soak.db.close()
        return dict(jobs=jobs, baseline=baseline, packs=packs,
                    tries=soak.tries, transactions=soak.transactions,
                    samples=samples, elapsed=elapsed, removed=removed,
                    counts=counts)
    finally:
        if worker is not None:
            testing.stopProcess(worker)
        server.stop()


def report(result, packEvery):
    now = datetime.datetime.now(datetime.timezone.utc)
    load = os.getloadavg()[0]
    lines = ['', '## Soak: %d no-op jobs, completed kept 0 s, a pack every '
             '%g s (`python bench/soak.py`)' % (result['jobs'], packEvery), '',
             'Run on %s UTC, %s, %d cores, Python %s; load average (1 min) '
             'at the end %.2f.  The machine is shared by 8 helper sessions '
             'running their tests: times vary a lot between runs; sizes and '
             'RSS much less.' % (now.strftime('%Y-%m-%d %H:%M'),
                                 platform.platform(), os.cpu_count(),
                                 platform.python_version(), load), '',
             'One `remotetask worker` (one thread, `--batch auto`, '
             'maintenance every 5 s) over a ZEO server holding a '
             'FileStorage; jobs added %d per transaction (the first 1,000 '
             'at once) with at most 5,000 waiting; `remotetask pack --db '
             'zeo://...` every %g s.  %d jobs in %.0f s; %d removed by '
             'retention.  The adding transactions were tried %d times for '
             '%d commits (the others conflicted with the worker\'s expiry '
             'steps, which change the jobs tree too).' % (
                 BATCH, packEvery, result['jobs'], result['elapsed'],
                 result['removed'], result['tries'],
                 result['transactions']), '',
             '| after | Data.fs after the pack (bytes) | pack took (s) |',
             '|---|---|---|',
             '| 1,000 jobs (baseline) | %d | |' % result['baseline']]
    for done, size, seconds in result['packs']:
        lines.append('| %d jobs | %d (%.2fx the baseline) | %.1f |' % (
            done, size, size / float(result['baseline']), seconds))
    lines += ['', '| jobs done | worker RSS (MB) | Data.fs before the next '
              'pack (bytes) | elapsed (s) |', '|---|---|---|---|']
    for mark, (rss, size, seconds) in sorted(result['samples'].items()):
        lines.append('| %d | %.1f | %d | %.0f |' % (mark, rss, size,
                                                    seconds))
    samples = result['samples']
    if 10000 in samples and result['jobs'] in samples:
        growth = samples[result['jobs']][0] - samples[10000][0]
        final = result['packs'][-1][1] / float(result['baseline'])
        lines += ['', 'Goals: the file after a pack within 2x of the '
                  'baseline: %.2fx (%s); RSS growth from 10,000 to %d jobs '
                  'at most 20 MB: %+.1f MB (%s).' % (
                      final, 'met' if final <= 2 else 'NOT met',
                      result['jobs'], growth,
                      'met' if growth <= 20 else 'NOT met')]
    return '\n'.join(lines) + '\n'


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--jobs', type=int, default=200000)
    parser.add_argument('--pack-every', type=float, default=60.0)
    parser.add_argument('--backlog', type=int, default=5000)
    parser.add_argument('--write', action='store_true',
                        help='append the figures to bench/RESULTS.md')
    args = parser.parse_args()
    result = run(args.jobs, args.pack_every, args.backlog)
    text = report(result, args.pack_every)
    print(text)
    if args.write:
        with open(os.path.join(HERE, 'RESULTS.md'), 'a') as f:
            f.write(text)


if __name__ == '__main__':
    main()

"""Soak benchmark (issue 17): many no-op jobs through one worker with
completed jobs kept 0 s and a pack every so often; the Data.fs size after
each pack and the worker's RSS as the jobs go by.

    python bench/soak.py [--jobs 200000] [--pack-every 60] [--write]
                         [--storage zeo|file] [--concurrency N]
                         [--tracemalloc DIR] [--worker-env NAME=VALUE]

A ZEO server (runzeo, started here on 127.0.0.1) holds a FileStorage (or,
with ``--storage file``, the worker holds the file itself and serves it to
this script through its embedded server); one ``remotetask worker``
process (its default threads unless ``--concurrency``, ``--batch auto``)
runs the jobs;
this script adds them 1,000 per transaction, keeping at most ``--backlog``
waiting, and packs the storage every ``--pack-every`` seconds with
``remotetask pack --db zeo://...`` (as a cron job would).  First a baseline:
1,000 jobs, then a pack: the size of the file "with 1,000 jobs".  With
``--write`` the figures are appended to bench/RESULTS.md.

``--tracemalloc DIR`` runs the worker with ``REMOTETASK_TRACEMALLOC=DIR``
(``remotetask.memtrace``): at each mark (10,000 jobs, 50,000...) the
worker dumps a snapshot, and the script prints the top growth by traceback
from the 10,000 one, with the connection and ZEO caches' sizes.  Tracing
costs time and memory: take RSS figures from runs without it.
"""
import argparse
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time

import transaction

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, 'src'))

from remotetask import db as dbmod  # noqa: E402
from remotetask.cli.common import DEFAULT_CONCURRENCY  # noqa: E402
from remotetask import embedded, memtrace, retention, testing  # noqa: E402
from remotetask.tests import uptimetasks  # noqa: E402,F401  (tasks)

#: Jobs added per transaction after the first 1,000.
BATCH = 200


rssMB = memtrace.rssMB


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


def startWorker(uri, tmp, storage, concurrency, traceDir, workerEnv,
                frames=None, src=None):
    args = ['worker', '--db', uri, '--import', 'remotetask.tests.uptimetasks',
            '--log-level', 'WARNING']
    if storage == 'file':
        # The script packs (through the worker's embedded server).
        args += ['--pack-interval', '0']
    if concurrency is not None:
        args += ['--concurrency', concurrency]
    env = dict(workerEnv)
    if traceDir is not None:
        env[memtrace.ENV] = traceDir
        if frames is not None:
            env[memtrace.ENV_FRAMES] = frames
    log = open(os.path.join(tmp, 'worker.log'), 'wb')
    env = testing.subprocessEnv(**env)
    if src is not None:
        # Another checkout's worker (a "before"); the tasks module is
        # this checkout's.
        env['PYTHONPATH'] = os.pathsep.join([os.path.abspath(src),
                                             env['PYTHONPATH']])
    return subprocess.Popen(
        testing.remotetaskCommand(*args), env=env,
        stdout=log, stderr=subprocess.STDOUT)


def waitServed(path, worker, timeout=60.0):
    """Wait until the worker holding ``path`` serves it."""
    deadline = time.monotonic() + timeout
    while embedded.liveServer(path) is None:
        if worker.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError('the worker did not serve %s (see worker.log '
                               'next to it)' % path)
        time.sleep(0.1)


def snapshot(worker, traceDir, count, timeout=300.0):
    """Have the worker dump its snapshot number ``count``; its base path."""
    base = os.path.join(traceDir, 'snapshot-%d' % count)
    worker.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while not os.path.exists(base + '.json'):
        if time.monotonic() > deadline:
            raise RuntimeError('no snapshot %s' % base)
        time.sleep(0.2)
    time.sleep(0.5)     # the JSON is written last; let it close
    return base


def describeCounts(base):
    with open(base + '.json') as f:
        info = json.load(f)
    caches = info['connection_caches']
    lines = ['  RSS %.1f MB (%.1f before a gc.collect() that freed %d), '
             'traced %.1f MB, %d gc objects' % (
                 info['rss_mb'], info['rss_mb_before_gc'],
                 info['gc_collected'], info['traced'] / 1048576.0,
                 info['gc_objects']),
        '  connection caches (limit %s objects, %s bytes): %s' % (
            caches['cache_size'], caches['cache_size_bytes'],
            ', '.join('%d obj/%d non-ghost/%.1f MB' % (
                c['objects'], c['non_ghosts'],
                c['estimated_bytes'] / 1048576.0)
                for c in caches['connections']))]
    if info['zeo_cache']:
        z = info['zeo_cache']
        lines.append('  ZEO cache: %d records (index %d current, %d '
                     'noncurrent), max %.1f MB, %s' % (
                         z['records'], z['current_index'],
                         z['noncurrent_index'], z['max_bytes'] / 1048576.0,
                         z['file']))
    lines.append('  types: ' + ', '.join('%s %d' % (name, n)
                                         for name, n in info['types'][:12]))
    return lines


def run(jobs, packEvery, backlog, storage='zeo', concurrency=None,
        traceDir=None, workerEnv=(), frames=None, src=None, dbOptions=''):
    tmp = tempfile.mkdtemp(prefix='remotetask-soak-')
    path = os.path.join(tmp, 'Data.fs')
    server = None
    worker = None
    samples = {}
    packs = []
    snapshots = {}
    try:
        if storage == 'zeo':
            server = testing.ZEOServer(path).start()
            uri = server.uri
            soak = Soak(uri, path)
            soak.setUp()
            worker = startWorker(
                uri + ('?' + dbOptions if dbOptions else ''), tmp, storage,
                concurrency, traceDir, workerEnv, frames, src)
        else:
            uri = path
            worker = startWorker(uri, tmp, storage, concurrency, traceDir,
                                 workerEnv, frames, src)
            waitServed(path, worker)
            soak = Soak(uri, path)
            soak.setUp()
        started = time.monotonic()
        lastPack = time.monotonic()
        baseline = None
        marks = sorted({m for m in (1000, 10000, 20000, 30000, 50000,
                                    100000, 150000) if m < jobs} | {jobs})
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
                          'bytes, %.0f s; %d completed not yet removed'
                          % ((mark,) + samples[mark] + (counts['completed'],)),
                          flush=True)
                    if traceDir is not None and mark >= 10000:
                        snapshots[mark] = snapshot(worker, traceDir,
                                                   len(snapshots) + 1)
                        print('\n'.join(describeCounts(snapshots[mark])),
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
        # (Retention may lag behind a fast worker: up to 10 minutes.)
        deadline = time.monotonic() + 600
        while soak.state()[1] < jobs and time.monotonic() < deadline:
            time.sleep(0.2)
        print('all removed %.0f s after the last job ran' % (
            time.monotonic() - started - samples[jobs][2]), flush=True)
        size, seconds = soak.pack()
        packs.append((jobs, size, seconds))
        print('final pack: Data.fs %d bytes' % size, flush=True)
        elapsed = time.monotonic() - started
        counts, removed = soak.state()
        soak.conn.close()
        soak.db.close()
        if traceDir is not None and len(snapshots) > 1:
            marks = sorted(snapshots)
            for mark in marks[1:]:
                print('\ntracemalloc: growth from %d to %d jobs done, by '
                      'traceback' % (marks[0], mark))
                print('\n'.join(memtrace.compare(snapshots[marks[0]],
                                                 snapshots[mark])))
        return dict(jobs=jobs, baseline=baseline, packs=packs,
                    tries=soak.tries, transactions=soak.transactions,
                    samples=samples, elapsed=elapsed, removed=removed,
                    counts=counts, storage=storage, concurrency=concurrency,
                    workerEnv=dict(workerEnv), src=src, dbOptions=dbOptions)
    finally:
        if worker is not None:
            testing.stopProcess(worker)
        if server is not None:
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
             'One `remotetask worker` (%s thread(s), `--batch auto`, '
             'maintenance every 5 s%s) %s; jobs added %d per transaction '
             '(the first 1,000 '
             'at once) with at most 5,000 waiting; `remotetask pack --db '
             '%s` every %g s.  %d jobs in %.0f s; %d removed by '
             'retention.  The adding transactions were tried %d times for '
             '%d commits (the others conflicted with the worker\'s expiry '
             'steps, which change the jobs tree too).' % (
                 result['concurrency'] or '%d (the default)'
                 % DEFAULT_CONCURRENCY, ''.join(
                     ', %s=%s' % item for item in
                     sorted(result['workerEnv'].items())),
                 'over a ZEO server holding a FileStorage'
                 if result['storage'] == 'zeo' else
                 'holding the FileStorage (the script reaches it through '
                 'the worker\'s embedded server)',
                 BATCH, 'zeo://...' if result['storage'] == 'zeo' else
                 '.../Data.fs', packEvery, result['jobs'], result['elapsed'],
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
    parser.add_argument('--storage', choices=('zeo', 'file'), default='zeo',
                        help='zeo: a runzeo server holds the file; file: '
                             'the worker holds it (embedded server)')
    parser.add_argument('--concurrency', type=int, default=None,
                        help="the worker's threads [its default]")
    parser.add_argument('--tracemalloc', metavar='DIR', default=None,
                        help='dump tracemalloc snapshots of the worker into '
                             'DIR at the marks and print the growth')
    parser.add_argument('--frames', type=int, default=None,
                        help='with --tracemalloc: frames per traceback '
                             '(0: no tracing, the cache counts only)')
    parser.add_argument('--worker-env', action='append', default=[],
                        metavar='NAME=VALUE',
                        help='environment of the worker (repeatable), e.g. '
                             'MALLOC_ARENA_MAX=2')
    parser.add_argument('--worker-db-options', metavar='QUERY', default='',
                        help="zodburi options of the worker's --db URI, "
                             "e.g. 'connection_cache_size=2000&cache_size="
                             "4MB' (zeo only)")
    parser.add_argument('--worker-src', metavar='SRC', default=None,
                        help="run the worker of another checkout's src/ "
                             '(a "before")')
    parser.add_argument('--write', action='store_true',
                        help='append the figures to bench/RESULTS.md')
    args = parser.parse_args()
    # A SIGTERM (kill, timeout) stops the worker and the server too.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(1))
    workerEnv = []
    for item in args.worker_env:
        name, sep, value = item.partition('=')
        if not sep or not name:
            parser.error('--worker-env wants NAME=VALUE, not %r' % item)
        workerEnv.append((name, value))
    if args.concurrency is not None and args.concurrency < 1:
        parser.error('--concurrency must be >= 1')
    result = run(args.jobs, args.pack_every, args.backlog, args.storage,
                 args.concurrency, args.tracemalloc, workerEnv,
                 args.frames, args.worker_src, args.worker_db_options)
    text = report(result, args.pack_every)
    print(text)
    if args.write:
        with open(os.path.join(HERE, 'RESULTS.md'), 'a') as f:
            f.write(text)


if __name__ == '__main__':
    main()

"""Cold start: a backlog first, then ONE worker; timed from the worker
process's start to its last job done.

    python bench/coldstart.py [--quick] [--sizes 3000,30000] [--runs N]
                              [--systems ...] [--output bench/RESULTS.md]
                              [--before SRC]

N no-op jobs are enqueued one per transaction (remotetask: into a
FileStorage, which is then copied for each remotetask row, so every row
starts from the same file and its index), then the worker is started and
the clock runs from just before its process is spawned until the last of
the N jobs is done.  "Done" is the same for every system: the job's no-op
task appends one byte to a count file (bench/coldmark.py); remotetask's
does so once the transaction that recorded the outcome has committed.
The peers are started the same way in the same run: huey's
``huey_consumer`` (SqliteHuey, one thread), RQ's ``rq worker``
(SimpleWorker) and Celery's ``celery worker -P solo``, with the local
Redis; their commands are the ones installed beside ``sys.executable``.

Rows:

- ``remotetask``: ``remotetask worker --concurrency 1`` on the FileStorage;
- ``remotetask 4 threads``: the same with ``--concurrency 4``;
- ``remotetask zeo 1``/``zeo 4``: 1 or 4 ``remotetask worker
  --concurrency 1`` processes over a ZEO server (started before, as Redis
  is for RQ and Celery) serving a copy of the same file;
- ``huey``, ``rq``, ``celery``.

``--before SRC`` adds the row ``remotetask before``: the same worker run
from another checkout's ``src`` (e.g. ``git worktree add /tmp/before
COMMIT``, then ``--before /tmp/before/src``), for before/after ratios of
the same run.

Every figure is also given as a ratio to huey's in the same run; with
``--runs N`` the table shows the range over the runs.  With ``--output``
the section ``## Cold start`` of that file is replaced (or appended).
"""
import argparse
import datetime
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, 'src'))
sys.path.insert(0, HERE)

from measure import command, env, startRedis  # noqa: E402

SYSTEMS = ('remotetask', 'remotetask 4 threads', 'remotetask zeo 1',
           'remotetask zeo 4', 'huey', 'rq', 'celery')
REDIS_URL = os.environ.get('BENCH_REDIS', 'redis://127.0.0.1:6379')
TIMEOUT = 900.0


def remove(path):
    for suffix in ('', '.index', '.lock', '.tmp'):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)


def enqueueRemotetask(path, n):
    """N ``cold.noop`` jobs, one per transaction, into the FileStorage
    ``path``; returns jobs/s."""
    import transaction
    from remotetask import db as dbmod
    from remotetask.retry import attempts
    import cold_remotetask  # noqa: F401  (registers cold.noop)
    remove(path)
    database = dbmod.openDB('file://' + path)
    try:
        dbmod.ensureService(database)
        tm = transaction.TransactionManager()
        conn = database.open(tm)
        started = time.perf_counter()
        for i in range(n):
            for attempt in attempts(tm):
                with attempt:
                    dbmod.getService(conn).add('cold.noop', i)
        rate = n / (time.perf_counter() - started)
        conn.close()
    finally:
        database.close()
    return rate


def countRemotetask(path):
    """(completed, all jobs) in the FileStorage ``path``."""
    import transaction
    from remotetask import db as dbmod
    database = dbmod.openDB('file://' + path)
    try:
        tm = transaction.TransactionManager()
        conn = database.open(tm)
        service = dbmod.getService(conn)
        result = service.count('completed'), len(service.jobs)
        tm.abort()
        conn.close()
    finally:
        database.close()
    return result


class Run:
    """One system draining one backlog."""

    def __init__(self, workdir, n):
        self.workdir = workdir
        self.n = n
        self.countfile = os.path.join(workdir, 'count')
        self.env = env()
        # As installed: byte code compiled once, read from then on (this
        # variable, if the bench's shell sets it, would make every worker
        # compile remotetask's sources at each start).
        self.env.pop('PYTHONDONTWRITEBYTECODE', None)
        self.env['BENCH_COLD_COUNT'] = self.countfile
        self.env['BENCH_COLD_HUEY'] = os.path.join(workdir, 'huey.db')
        os.environ.update(BENCH_COLD_COUNT=self.countfile,
                          BENCH_COLD_HUEY=self.env['BENCH_COLD_HUEY'])

    def time(self, commands, cwd=None):
        """Start ``commands`` (one process each) and wait until N jobs are
        counted; returns (seconds to the first job, seconds to the last)."""
        if os.path.exists(self.countfile):
            os.remove(self.countfile)
        log = open(os.path.join(self.workdir, 'worker.log'), 'ab')
        first = None
        started = time.perf_counter()
        procs = [subprocess.Popen(argv, cwd=cwd or HERE, env=self.env,
                                  stdout=log, stderr=subprocess.STDOUT)
                 for argv in commands]
        try:
            while True:
                try:
                    done = os.stat(self.countfile).st_size
                except FileNotFoundError:
                    done = 0
                now = time.perf_counter()
                if done and first is None:
                    first = now - started
                if done >= self.n:
                    return first, now - started
                if now - started > TIMEOUT:
                    raise TimeoutError('%d of %d jobs done after %ds' % (
                        done, self.n, TIMEOUT))
                for proc in procs:
                    if proc.poll() is not None:
                        raise RuntimeError('%s exited with status %s (see '
                                           '%s)' % (commands[0][0],
                                                    proc.returncode,
                                                    log.name))
                time.sleep(0.002)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            log.close()

    # -- remotetask -----------------------------------------------------------

    def worker(self, uri, concurrency=1):
        return [command('remotetask'), 'worker', '--db', uri,
                '--concurrency', str(concurrency), '--import',
                'cold_remotetask']

    def remotetask(self, source, concurrency=1, zeo=0, src=None):
        if src:
            saved = self.env['PYTHONPATH']
            self.env['PYTHONPATH'] = os.pathsep.join([src, HERE])
            try:
                return self.remotetask(source, concurrency, zeo)
            finally:
                self.env['PYTHONPATH'] = saved
        path = os.path.join(self.workdir, 'run.fs')
        remove(path)
        shutil.copy(source, path)
        shutil.copy(source + '.index', path + '.index')
        if zeo:
            from remotetask import testing
            with testing.ZEOServer(path) as server:
                result = self.time([self.worker(server.uri)] * zeo)
        else:
            result = self.time([self.worker('file://' + path, concurrency)])
        completed, total = countRemotetask(path)
        if completed != self.n:
            raise RuntimeError('%d of %d jobs completed' % (completed,
                                                            self.n))
        return result

    # -- peers ----------------------------------------------------------------

    def huey(self):
        import cold_huey
        cold_huey.huey.flush()
        for i in range(self.n):
            cold_huey.noop(i)
        return self.time([[command('huey_consumer'), 'cold_huey.huey', '-w',
                           '1', '-k', 'thread']])

    def rq(self):
        import redis
        from rq import Queue
        import cold_rq
        connection = redis.Redis.from_url(REDIS_URL + '/10')
        connection.flushdb()
        queue = Queue('cold', connection=connection)
        for i in range(self.n):
            queue.enqueue(cold_rq.noop, i, result_ttl=3600)
        try:
            return self.time([[command('rq'), 'worker', '-u',
                               REDIS_URL + '/10', '-w',
                               'rq.worker.SimpleWorker', 'cold']])
        finally:
            connection.flushdb()

    def celery(self):
        import redis
        import cold_celery
        for db in (11, 12):
            redis.Redis.from_url(REDIS_URL + '/%d' % db).flushdb()
        for i in range(self.n):
            cold_celery.noop.apply_async((i,))
        try:
            return self.time([[command('celery'), '-A', 'cold_celery',
                               'worker', '-P', 'solo', '-c', '1',
                               '--without-gossip', '--without-mingle',
                               '--without-heartbeat', '-l', 'WARNING']])
        finally:
            for db in (11, 12):
                redis.Redis.from_url(REDIS_URL + '/%d' % db).flushdb()


def measure(sizes, runs, systems, workdir, log=print, before=None):
    """{(n, system): [(first, last) per run]}, and the enqueue rates."""
    results = {}
    enqueued = {}
    # pip compiles an installed package's byte code; a checkout (pip
    # install -e) gets it at its first import: compile it before timing.
    import compileall
    if before:
        systems = ['remotetask before'] + list(systems)
    for folder in (os.path.join(ROOT, 'src'), HERE) + ((before,) if before
                                                        else ()):
        compileall.compile_dir(folder, quiet=1)
    if {'rq', 'celery'} & set(systems):
        log('Redis: %s' % startRedis())
    for n in sizes:
        run = Run(workdir, n)
        source = os.path.join(workdir, 'backlog-%d.fs' % n)
        if any(s.startswith('remotetask') for s in systems):
            enqueued[n] = enqueueRemotetask(source, n)
            log('enqueued %d jobs one per transaction: %.0f/s' % (
                n, enqueued[n]))
        for i in range(runs):
            for system in systems:
                if system == 'remotetask':
                    timed = run.remotetask(source)
                elif system == 'remotetask before':
                    timed = run.remotetask(source, src=before)
                elif system == 'remotetask 4 threads':
                    timed = run.remotetask(source, concurrency=4)
                elif system.startswith('remotetask zeo '):
                    timed = run.remotetask(source, zeo=int(system.split()[-1]))
                else:
                    timed = getattr(run, system)()
                results.setdefault((n, system), []).append(timed)
                log('N=%d run %d %-22s first job %.2fs, last %.2fs '
                    '(%.0f jobs/s)' % (n, i + 1, system, timed[0], timed[1],
                                       n / timed[1]))
        remove(source)
    return results, enqueued


def span(values, fmt):
    low, high = min(values), max(values)
    if fmt % low == fmt % high:
        return fmt % low
    return (fmt + '-' + fmt) % (low, high)


def table(results, sizes, systems, runs):
    lines = ['| N | system | seconds to the last job | jobs/s | to the first '
             'job s | vs huey (same run; > 1 is faster) |',
             '|---|---|---|---|---|---|']
    for n in sizes:
        huey = results.get((n, 'huey'))
        for system in systems:
            timed = results.get((n, system))
            if not timed:
                continue
            ratio = 'n/a'
            if huey and system != 'huey':
                ratio = span([h[1] / t[1] for h, t in zip(huey, timed)],
                             '%.2f')
            lines.append('| %d | %s | %s | %s | %s | %s |' % (
                n, system, span([t[1] for t in timed], '%.2f'),
                span([n / t[1] for t in timed], '%.0f'),
                span([t[0] for t in timed], '%.2f'), ratio))
        one = results.get((n, 'remotetask'))
        for other in ('remotetask 4 threads', 'remotetask zeo 4',
                      'remotetask'):
            base = {'remotetask 4 threads': 'remotetask',
                    'remotetask zeo 4': 'remotetask zeo 1',
                    'remotetask': 'remotetask before'}[other]
            one = results.get((n, base))
            many = results.get((n, other))
            if one and many:
                lines.append('| %d | %s vs %s | | %sx | | |' % (
                    n, other, base,
                    span([a[1] / b[1] for a, b in zip(one, many)], '%.2f')))
    return lines


def section(results, enqueued, sizes, systems, runs, load):
    return ['## Cold start', '',
            'Written by `python bench/coldstart.py` on %s UTC (%d run%s; '
            'ranges over the runs; load average (1 min) at the start %s, '
            'at the end %.2f: the 2 cores are shared with other sessions, '
            'so compare ratios of the same run).' % (
                datetime.datetime.utcnow().strftime('%Y-%m-%d %H:%M'), runs,
                's' if runs > 1 else '', load, os.getloadavg()[0]), '',
            'N no-op jobs enqueued one per transaction (remotetask: into a '
            'FileStorage, %s), then ONE worker process started; timed from '
            'just before the process is spawned to the last job done '
            '(imports, opening the storage, the first claims included).  '
            'See the docstring of bench/coldstart.py for the rows.' % (
                ', '.join('%.0f jobs/s at N=%d' % (r, n)
                          for n, r in sorted(enqueued.items()))
                or 'not measured'), ''] + table(results, sizes, systems, runs)


def replaceSection(path, lines):
    text = open(path).read() if os.path.exists(path) else ''
    head, sep, tail = text.partition('\n## Cold start\n')
    if sep:
        rest = tail.split('\n## ', 1)
        tail = ('\n## ' + rest[1]) if len(rest) > 1 else ''
    new = head.rstrip('\n') + '\n\n' + '\n'.join(lines) + '\n' + tail
    with open(path, 'w') as f:
        f.write(new)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true',
                        help='N = 1,000 and 3,000')
    parser.add_argument('--sizes', default=None,
                        help='comma-separated N (default 3000,30000)')
    parser.add_argument('--runs', type=int, default=1)
    parser.add_argument('--systems', default=','.join(SYSTEMS))
    parser.add_argument('--before', default=None, metavar='SRC',
                        help="another checkout's src directory: adds the "
                             "row 'remotetask before'")
    parser.add_argument('--output', default=None,
                        help='replace the "## Cold start" section of this '
                             'file (e.g. bench/RESULTS.md)')
    args = parser.parse_args(argv)
    sizes = [int(s) for s in (args.sizes or (
        '1000,3000' if args.quick else '3000,30000')).split(',')]
    systems = [s.strip() for s in args.systems.split(',')]
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        parser.error('unknown systems: %s (known: %s)' % (
            ', '.join(sorted(unknown)), ', '.join(SYSTEMS)))
    load = '%.2f' % os.getloadavg()[0]
    workdir = tempfile.mkdtemp(prefix='remotetask-cold-')
    try:
        results, enqueued = measure(sizes, args.runs, systems, workdir,
                                    before=args.before)
        if args.before:
            systems = ['remotetask before'] + systems
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    lines = section(results, enqueued, sizes, systems, args.runs, load)
    print('\n'.join(lines))
    if args.output:
        replaceSection(args.output, lines)


if __name__ == '__main__':
    main()

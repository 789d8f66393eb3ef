"""RelStorage round trip, phase by phase, and what idle workers cost.

    python bench/roundtrip.py [--samples 60] [--rounds 2] [--before SRC]
                              [--idle-workers 4] [--idle-seconds 30]
                              [--idle-warmup 20]
                              [--skip-idle] [--poll-sleep 0.0005]
                              [--clusters machine,disk,tmpfs]
                              [--disk-dir /tmp] [--tmpfs-dir /dev/shm]

Round trip (as bench/measure.py's ``remotetaskLatency``, the row of
bench/run.py): one worker process (``scale_agents process``, a real
``Processor``, one thread) idles on a RelStorage database on the local
PostgreSQL; the client adds one no-op job, commits, then polls the job's
status (a new transaction each time, ``--poll-sleep`` between polls) until
it is completed.  Both processes stamp ``time.time()`` at each phase (the
functions named in ``PHASES``, wrapped in this script, not in remotetask):
add, its commit, the NOTIFY, the listener's wake, the claim and its commit,
the run and its commit, the client seeing it.  Printed: the median time
from the start of the add to each phase.

Idle cost: ``--idle-workers`` ``remotetask worker --concurrency 1``
processes (their defaults: poll interval 1 s, maintenance every 5 s,
registry heartbeat every 5 s; while idle with their LISTEN connection,
since 2026-12-02, one look every ``pgnotify.QUIET_POLL`` and a heartbeat
every ``quiet.IDLE_HEARTBEAT`` seconds) idle for ``--idle-seconds``, from
``--idle-warmup`` seconds after they started (PostgreSQL flushes an idle
backend's statistics up to 10 s late: start-up transactions must not
fall into the window), on a database of their own; the PostgreSQL
statistics of that database
(``pg_stat_database``: transactions committed and rolled back, rows
fetched, read from a connection to another database) before and after,
per second and per worker, and the connections left inside a transaction
at the end (``idle in transaction``: each holds a snapshot, and VACUUM's
horizon); with 0 workers, what the measuring itself costs (the statistics
collector's own writes; the measuring process's own connection is one of
those inside a transaction).

``--before SRC`` runs the same with another checkout's ``src`` (e.g.
``git worktree add /tmp/before COMMIT``), alternating, for same-run ratios.

``--clusters`` (default ``machine``): the PostgreSQL servers measured,
alternating within each round (the order reversed every other round):
``machine`` is the server on 127.0.0.1:5432; ``disk`` and ``tmpfs`` are
throwaway clusters started by this script (``testing.ThrowawayPostgres``:
the same initdb and pg_ctl, a free port of 127.0.0.1, trust auth, with
PostgreSQL's default durability, ``fsync`` and ``full_page_writes`` on),
their data directories under ``--disk-dir`` (default /tmp) and
``--tmpfs-dir`` (default /dev/shm); the filesystem and mount options of
each are printed.  Both are stopped and removed at the end, also on an
error or Ctrl-C.  Each round measures, on each server, the floors (a
one-row PostgreSQL commit, a one-object RelStorage commit) and the round
trip; a summary of the ranges over the rounds ends the output.  The
question it answers: how much of a RelStorage commit is the filesystem
under the data directory (on ext4 mounted with ``discard``, every
truncation of RelStorage's ``ON COMMIT DELETE ROWS`` temporary tables
issues a discard; docs/design.md, "What a RelStorage commit costs").
A data directory on tmpfs is the bench's control, not a deployment.
"""
import argparse
import functools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

#: (module, class, attribute, label): wrapped to stamp label0/label1.
PHASES = [
    ('remotetask.pgnotify', '_Sender', 'send', 'notify'),
    ('remotetask.pgnotify', 'Listener', '_call', 'wake'),
    ('remotetask.processor', 'Processor', '_claimIn', 'claim'),
    ('remotetask.processor', 'Processor', '_attempts', 'run'),
    ('remotetask.processor', 'Processor', '_runClaimed', 'claimed'),
    ('transaction._transaction', 'Transaction', 'commit', 'commit'),
]


class Trace:
    """Stamps of one process, appended to a file when flushed."""

    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()
        self.lines = []

    def stamp(self, what, extra=''):
        with self.lock:
            self.lines.append('%.6f %d %s %s\n' % (time.time(), os.getpid(),
                                                   what, extra))

    def flush(self):
        with self.lock:
            lines, self.lines = self.lines, []
        if lines:
            with open(self.path, 'a') as f:
                f.write(''.join(lines))

    def install(self):
        import importlib
        for module, cls, name, label in PHASES:
            try:
                owner = getattr(importlib.import_module(module), cls)
                orig = getattr(owner, name)
            except (ImportError, AttributeError):
                continue        # not in this version
            setattr(owner, name, self._wrap(orig, label))

    def _wrap(self, orig, label):
        @functools.wraps(orig)
        def wrapper(*args, **kw):
            self.stamp(label + '0')
            try:
                return orig(*args, **kw)
            finally:
                self.stamp(label + '1')
        return wrapper


def childEnv(src, port=None):
    env = dict(os.environ)
    if port:
        env['ROUNDTRIP_PG_PORT'] = str(port)
    env['PYTHONPATH'] = os.pathsep.join([src, HERE])
    env.pop('PYTHONDONTWRITEBYTECODE', None)
    return env


def pgPort():
    """The PostgreSQL server's port on 127.0.0.1 (a child's: set by the
    driver in ``ROUNDTRIP_PG_PORT``; default the machine's)."""
    from remotetask import testing
    return int(os.environ.get('ROUNDTRIP_PG_PORT') or testing.PG_PORT)


# -- child processes ---------------------------------------------------------

def workerMain(uri, statsfile, tracefile):
    """A worker process (scale_agents process) with the phases stamped."""
    trace = Trace(tracefile)
    trace.install()
    from remotetask.tests import scale_agents
    try:
        return scale_agents.process(uri, statsfile, 60.0, 'auto')
    finally:
        trace.flush()


def clientMain(src, samples, poll_sleep, tracefile):
    """The round trip against one worker; prints JSON."""
    sys.path.insert(0, src)     # before measure's own src (imported first)
    import remotetask  # noqa: F401
    trace = Trace(tracefile)
    trace.install()
    import measure
    from remotetask.interfaces import COMPLETED
    workdir = tempfile.mkdtemp(prefix='remotetask-roundtrip-')
    result = []
    with measure.Store('relstorage', workdir, pgPort=pgPort()) as store:
        statsfile = os.path.join(workdir, 'w.json')
        proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), 'worker', store.uri,
             statsfile, tracefile], env=childEnv(src, pgPort()),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while not os.path.exists(statsfile + '.ready'):
                if time.monotonic() > deadline:
                    raise TimeoutError('the worker did not start')
                time.sleep(0.05)
            time.sleep(1.0)
            for i in range(samples + 3):
                trace.stamp('add0', str(i))
                started = time.perf_counter()
                jobid = store.transact(lambda s: s.add('scale.noop', i))
                deadline = time.monotonic() + 30
                while True:
                    store.tm.begin()
                    status = store.service.jobs[jobid].status
                    store.tm.abort()
                    if status == COMPLETED:
                        break
                    if time.monotonic() > deadline:
                        raise TimeoutError('job %s not completed' % jobid)
                    time.sleep(poll_sleep)
                trace.stamp('seen', str(jobid))
                result.append(time.perf_counter() - started)
                trace.flush()
                time.sleep(0.05)        # the worker goes idle again
        finally:
            import signal
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    trace.flush()
    q = statistics.quantiles(result[3:], n=20)
    print(json.dumps({'p50': statistics.median(result[3:]), 'p95': q[18]}))


def phases(tracefile, skip=3):
    """Median ms from each sample's add to the first stamp of each phase
    (C: the client, W: the worker), in order."""
    rows = []
    with open(tracefile) as f:
        for line in f:
            t, pid, what = line.split()[:3]
            rows.append((float(t), int(pid), what))
    rows.sort()
    client = next(pid for t, pid, what in rows if what == 'add0')
    samples, current = [], None
    for t, pid, what in rows:
        if what == 'add0' and pid == client:
            current = {}
            samples.append((t, current))
        elif current is not None:
            key = ('C ' if pid == client else 'W ') + what
            current.setdefault(key, t)
    found = {}
    for t0, stamps in samples[skip:]:
        for key, t in stamps.items():
            found.setdefault(key, []).append((t - t0) * 1000)
    return sorted(((statistics.median(v), key, len(v))
                   for key, v in found.items()))


# -- floors ------------------------------------------------------------------

def floorsMain(n):
    """Prints JSON: p50 seconds of a PostgreSQL commit of one row update
    (psycopg2, as pgbench's simplest write), and of a RelStorage commit of
    one small persistent object (``?keep_history=false``, as the bench's
    databases), on a database of their own."""
    import psycopg2
    import transaction
    from remotetask import db as dbmod
    from remotetask import testing
    pg = testing.PostgresDatabase(port=pgPort()).create()
    try:
        conn = psycopg2.connect(dbname=pg.name, host=pg.host, port=pg.port,
                                user=pg.user)
        cur = conn.cursor()
        cur.execute('CREATE TABLE t (id int PRIMARY KEY, v int)')
        cur.execute('INSERT INTO t VALUES (1, 0)')
        conn.commit()
        raw = []
        for i in range(n):
            started = time.perf_counter()
            cur.execute('UPDATE t SET v = %s WHERE id = 1', (i,))
            conn.commit()
            raw.append(time.perf_counter() - started)
        conn.close()
        database = dbmod.openDB(pg.uri + '?keep_history=false')
        try:
            tm = transaction.TransactionManager()
            c = database.open(tm)
            root = c.root()
            from BTrees.Length import Length
            root['n'] = Length()
            tm.commit()
            rs = []
            for i in range(n):
                started = time.perf_counter()
                root['n'].change(1)
                tm.commit()
                rs.append(time.perf_counter() - started)
            c.close()
        finally:
            database.close()
    finally:
        pg.drop()
    print(json.dumps({'pg': statistics.median(raw),
                      'relstorage': statistics.median(rs)}))


# -- idle cost ---------------------------------------------------------------

def pgStats(dbname):
    from remotetask import testing
    conn = testing._pgConnect(port=pgPort())
    try:
        cur = conn.cursor()
        cur.execute('SELECT pg_stat_clear_snapshot()')
        cur.execute('SELECT xact_commit, xact_rollback, tup_fetched, '
                    'tup_returned FROM pg_stat_database WHERE datname = %s',
                    (dbname,))
        commit, rollback, fetched, returned = cur.fetchone()
        cur.execute("SELECT count(*), count(*) FILTER (WHERE state LIKE "
                    "'idle in transaction%%') FROM pg_stat_activity WHERE "
                    "datname = %s", (dbname,))
        connections, intrans = cur.fetchone()
    finally:
        conn.close()
    return {'commit': commit, 'rollback': rollback, 'fetched': fetched,
            'returned': returned, 'connections': connections,
            'idle_in_transaction': intrans}


def idleMain(src, workers, seconds, warmup):
    """``workers`` idle worker processes for ``seconds``; prints JSON."""
    sys.path.insert(0, src)
    import remotetask  # noqa: F401
    import measure
    workdir = tempfile.mkdtemp(prefix='remotetask-idle-')
    with measure.Store('relstorage', workdir, pgPort=pgPort()) as store:
        dbname = store.pg.name
        store.tm.abort()
        store.conn.close()
        store.conn = store.db.open(store.tm)
        procs = []
        try:
            for i in range(workers):
                procs.append(subprocess.Popen(
                    [sys.executable, '-m', 'remotetask', 'worker', '--db',
                     store.uri, '--import', 'remotetask.tests.scale_agents',
                     '--concurrency', '1', '--log-level', 'WARNING'],
                    env=childEnv(src, pgPort()), stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL))
            # Started (imports, connections, registry entries) and idle.
            deadline = time.monotonic() + 60
            while pgStats(dbname)['connections'] < 1 + 3 * workers:
                if time.monotonic() > deadline:
                    raise TimeoutError('workers did not start')
                time.sleep(0.2)
            time.sleep(warmup)
            # This process's own connections: idle from here on.
            store.tm.abort()
            before = pgStats(dbname)
            time.sleep(seconds)
            after = pgStats(dbname)
        finally:
            import signal
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                proc.wait(60)
    per = {k: (after[k] - before[k]) / seconds / max(workers, 1)
           for k in ('commit', 'rollback', 'fetched', 'returned')}
    print(json.dumps({'per_worker_per_s': per,
                      'connections': after['connections'],
                      'idle_in_transaction': after['idle_in_transaction'],
                      'seconds': seconds, 'workers': workers}))


# -- the driver --------------------------------------------------------------

def runChild(args, src, port=None):
    """Runs this script's command ``args`` in a process group of its own;
    on an error, a timeout, Ctrl-C or SIGTERM the whole group (the child
    and the workers it started) is killed."""
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__)]
                            + args, env=childEnv(src, port),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=600)
    except BaseException:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        proc.wait()
        raise
    if proc.returncode:
        raise RuntimeError('%s failed: %s' % (args[0], stderr[-2000:]))
    return json.loads(stdout.strip().splitlines()[-1])


def mountOf(path):
    """(mount point, filesystem type, options) of the filesystem holding
    ``path``, from /proc/mounts (the longest mount point above it)."""
    path = os.path.realpath(path)
    best = ('', '?', '?')
    try:
        with open('/proc/mounts') as f:
            for line in f:
                device, point, fstype, options = line.split()[:4]
                point = point.replace('\\040', ' ')
                inside = path == point or path.startswith(
                    point.rstrip('/') + '/')
                if inside and len(point) >= len(best[0]):
                    best = (point, fstype, options)
    except OSError:
        pass
    return best


class Clusters:
    """The PostgreSQL servers measured: name -> port; the throwaway ones
    started on entering, stopped and removed on leaving (also after an
    error, Ctrl-C or SIGTERM)."""

    def __init__(self, names, dirs):
        self.names = names
        self.dirs = dirs
        self.ports = {}
        self.where = {}
        self.started = []

    def __enter__(self):
        from remotetask import testing
        previous = signal.getsignal(signal.SIGTERM)
        self._previous = previous

        def terminated(signum, frame):
            raise SystemExit('terminated')
        signal.signal(signal.SIGTERM, terminated)
        try:
            for name in self.names:
                if name == 'machine':
                    reason = testing.postgresAvailable()
                    if reason:
                        raise SystemExit(reason)
                    self.ports[name] = testing.PG_PORT
                    self.where[name] = None
                    continue
                parent = self.dirs[name]
                if not os.path.isdir(parent):
                    raise SystemExit('--%s-dir %s: no such directory' % (
                        name, parent))
                cluster = testing.ThrowawayPostgres(
                    parent=parent, settings=testing.ThrowawayPostgres.DURABLE)
                self.started.append(cluster)
                cluster.start()
                self.ports[name] = cluster.port
                self.where[name] = cluster.data
        except BaseException:
            self.__exit__()
            raise
        return self

    def describe(self):
        for name in self.names:
            if self.where[name] is None:
                print('cluster %s: the server on 127.0.0.1:%d'
                      % (name, self.ports[name]))
                continue
            point, fstype, options = mountOf(self.where[name])
            print('cluster %s: 127.0.0.1:%d, data %s on %s (%s, %s)' % (
                name, self.ports[name], self.where[name], point, fstype,
                options))

    def __exit__(self, *exc):
        try:
            while self.started:
                cluster = self.started.pop()
                try:
                    cluster.destroy()
                except Exception as e:
                    print('could not stop the cluster in %s: %s (pg_ctl -D '
                          '%s stop)' % (cluster.dir, e, cluster.data),
                          file=sys.stderr)
        finally:
            signal.signal(signal.SIGTERM, self._previous)


def span(values, unit=1000, fmt='%.1f'):
    if not values:
        return '-'
    values = [v * unit for v in values]
    if len(values) == 1:
        return fmt % values[0]
    return (fmt + '-' + fmt + ' (median ' + fmt + ')') % (
        min(values), max(values), statistics.median(values))


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n')[0],
        epilog='--clusters: machine (127.0.0.1:5432), disk (a throwaway '
               'cluster under --disk-dir), tmpfs (one under --tmpfs-dir); '
               'see the module docstring.')
    parser.add_argument('--samples', type=int, default=60)
    parser.add_argument('--rounds', type=int, default=2)
    parser.add_argument('--before', default=None, metavar='SRC')
    parser.add_argument('--idle-workers', type=int, default=4)
    parser.add_argument('--idle-seconds', type=float, default=30.0)
    parser.add_argument('--idle-warmup', type=float, default=20.0)
    parser.add_argument('--skip-idle', action='store_true')
    parser.add_argument('--skip-roundtrip', action='store_true')
    parser.add_argument('--poll-sleep', type=float, default=0.0005)
    parser.add_argument('--floors', type=int, default=200, metavar='N',
                        help='commits per floor measure (default 200)')
    parser.add_argument('--clusters', default='machine',
                        help='comma-separated: machine, disk, tmpfs '
                             '(default machine)')
    parser.add_argument('--disk-dir', default='/tmp',
                        help='parent of the disk cluster (default /tmp)')
    parser.add_argument('--tmpfs-dir', default='/dev/shm',
                        help='parent of the tmpfs cluster (default /dev/shm)')
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.clusters.split(',') if n.strip()]
    unknown = set(names) - {'machine', 'disk', 'tmpfs'}
    if unknown or not names or len(set(names)) != len(names):
        parser.error('--clusters: a comma-separated list of distinct '
                     'machine, disk, tmpfs (got %r)' % args.clusters)
    sys.path.insert(0, os.path.join(ROOT, 'src'))
    versions = [('after', os.path.join(ROOT, 'src'))]
    if args.before:
        versions.insert(0, ('before', os.path.abspath(args.before)))
    print('load average at the start: %.2f' % os.getloadavg()[0])
    floors, p50s = {}, {}
    with Clusters(names, {'disk': args.disk_dir,
                          'tmpfs': args.tmpfs_dir}) as clusters:
        clusters.describe()
        multi = len(names) > 1
        for r in range(args.rounds if not args.skip_roundtrip else 1):
            order = names if r % 2 == 0 else names[::-1]
            for cluster in order:
                port = clusters.ports[cluster]
                label = (' [%s]' % cluster) if multi else ''
                got = runChild(['floors', str(args.floors)], versions[-1][1],
                               port)
                floors.setdefault(cluster, []).append(got)
                print('\nfloors%s (p50 of %d): PostgreSQL commit of one row '
                      '%.2f ms, RelStorage commit of one object %.2f ms '
                      '(load %.2f)' % (label, args.floors, got['pg'] * 1000,
                                       got['relstorage'] * 1000,
                                       os.getloadavg()[0]))
                if args.skip_roundtrip:
                    continue
                for name, src in versions:
                    tracefile = tempfile.mktemp(prefix='roundtrip-trace-')
                    try:
                        got = runChild(['client', src, str(args.samples),
                                        str(args.poll_sleep), tracefile], src,
                                       port)
                        p50s.setdefault((cluster, name), []).append(
                            got['p50'])
                        print('\nround %d%s, %s: p50 %.1f ms, p95 %.1f ms '
                              '(load %.2f)' % (r + 1, label, name,
                                               got['p50'] * 1000,
                                               got['p95'] * 1000,
                                               os.getloadavg()[0]))
                        for median, key, n in phases(tracefile):
                            print('  %-12s %7.2f ms  (n=%d)' % (key, median,
                                                                 n))
                    finally:
                        if os.path.exists(tracefile):
                            os.remove(tracefile)
        if not args.skip_idle:
            for cluster in names:
                for name, src in versions:
                    for workers in (0, args.idle_workers):
                        got = runChild(['idle', src, str(workers),
                                        str(args.idle_seconds),
                                        str(args.idle_warmup)], src,
                                       clusters.ports[cluster])
                        print('\nidle%s, %s, %d workers, %.0f s: %s' % (
                            (' [%s]' % cluster) if multi else '', name,
                            workers, args.idle_seconds, json.dumps(got)))
    print('\nsummary (ranges over %d round(s); ms):' % len(
        next(iter(floors.values()), [])))
    for cluster in names:
        print('  %-8s floors: PostgreSQL one-row commit %s, RelStorage '
              'one-object commit %s' % (
                  cluster,
                  span([g['pg'] for g in floors.get(cluster, [])],
                       fmt='%.2f'),
                  span([g['relstorage'] for g in floors.get(cluster, [])],
                       fmt='%.2f')))
        for name, src in versions:
            if (cluster, name) in p50s:
                print('  %-8s round trip p50, %s: %s' % (
                    cluster, name, span(p50s[(cluster, name)])))
    print('load average at the end: %.2f' % os.getloadavg()[0])


if __name__ == '__main__':
    cmd = sys.argv[1] if len(sys.argv) > 1 else None
    if cmd == 'worker':
        sys.exit(workerMain(*sys.argv[2:5]))
    elif cmd == 'client':
        sys.path.insert(0, HERE)
        clientMain(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]),
                   sys.argv[5])
    elif cmd == 'floors':
        floorsMain(int(sys.argv[2]))
    elif cmd == 'idle':
        sys.path.insert(0, HERE)
        idleMain(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]),
                 float(sys.argv[5]))
    else:
        main()

"""Measurements for bench/run.py: remotetask on one storage, and the peers.

Rates are measured the same way for every system: a poller counts finished
jobs every few milliseconds; a drain rate is (jobs finished between the
first and the last poll that saw progress) / (time between them), so
process start-up is not counted for anyone.
"""
import os
import signal
import statistics
import subprocess
import sys
import time

import transaction

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, 'src'))
sys.path.insert(0, HERE)

from remotetask import db as dbmod  # noqa: E402
from remotetask import testing  # noqa: E402
from remotetask.interfaces import COMPLETED  # noqa: E402
from remotetask.retry import attempts  # noqa: E402
from remotetask.tests import scale_agents  # noqa: E402,F401  (tasks)

POLL = 0.02


def drainRate(count, n, timeout=180.0):
    """Poll ``count()`` until it reaches ``n``; return jobs/s."""
    first = None
    deadline = time.monotonic() + timeout
    while True:
        c = count()
        now = time.perf_counter()
        if c > 0 and first is None:
            first = (now, c)
        if c >= n:
            if now <= first[0] or c <= first[1]:
                return float('nan')
            return (c - first[1]) / (now - first[0])
        if time.monotonic() > deadline:
            raise TimeoutError('only %d of %d jobs done after %ss'
                               % (c, n, timeout))
        time.sleep(POLL)


def percentiles(samples):
    samples = sorted(samples)
    q = statistics.quantiles(samples, n=20)
    return statistics.median(samples), q[18]


def env():
    return testing.subprocessEnv(PYTHONPATH=os.pathsep.join(
        [os.path.join(ROOT, 'src'), HERE]))


# -- remotetask ---------------------------------------------------------------

class Store:
    """One remotetask database: ``kind`` file, zeo or relstorage."""

    def __init__(self, kind, workdir, zeoServer=None, pgPort=None):
        """``zeoServer``: the class of the ZEO server started for kind
        'zeo' (``testing.ZEOServer``); ``pgPort``: the port of the
        PostgreSQL server on 127.0.0.1 for kind 'relstorage' (default
        ``testing.PG_PORT``, the machine's)."""
        self.zeoServer = zeoServer or testing.ZEOServer
        self.pgPort = pgPort or testing.PG_PORT
        self.name = dbmod.DEFAULT_SERVICE
        # Idle workers wait for an invalidation (FileStorage, ZEO) or a
        # NOTIFY (RelStorage: remotetask.pgnotify), polling once a second
        # besides (the worker's default).
        self.kind = kind
        self.workdir = workdir
        self.server = self.pg = None
        self.uri = None

    def __enter__(self):
        path = os.path.join(self.workdir, '%s.fs' % self.kind)
        for suffix in ('', '.index', '.lock', '.tmp'):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
        if self.kind == 'file':
            self.uri = 'file://' + path
        elif self.kind == 'zeo':
            self.server = self.zeoServer(path).start()
            self.uri = self.server.uri
        else:
            self.pg = testing.PostgresDatabase(port=self.pgPort).create()
            self.uri = self.pg.uri + '?keep_history=false'
        self.db = dbmod.openDB(self.uri)
        dbmod.ensureService(self.db)
        self.tm = transaction.TransactionManager()
        self.conn = self.db.open(self.tm)
        return self

    def __exit__(self, *exc):
        self.tm.abort()
        self.conn.close()
        self.db.close()
        if self.server:
            self.server.stop()
        if self.pg:
            self.pg.drop()

    @property
    def service(self):
        return dbmod.getService(self.conn, self.name, create=True)

    def count(self, status=COMPLETED):
        """Jobs in ``status``; by default the ones that ended (completed
        or error: a job a Processor gave up on must not stall a drain)."""
        self.tm.begin()
        try:
            if status == COMPLETED:
                return self.service.count(COMPLETED) + self.service.count(
                    'error')
            return self.service.count(status)
        finally:
            self.tm.abort()

    def transact(self, func, *args):
        """``func(service, *args)`` in a transaction, retried."""
        for attempt in attempts(self.tm):
            with attempt:
                result = func(self.service, *args)
        return result

    def clean(self):
        self.transact(lambda service: service.clean())

    def measureEnqueue(self, n, per_txn):
        """Enqueue into a service of its own, which no worker drains."""
        self.name = 'enqueue-bench'
        try:
            return self.enqueue(n, per_txn)
        finally:
            self.name = dbmod.DEFAULT_SERVICE

    def enqueue(self, n, per_txn, task='scale.noop'):
        def add(service, first):
            for i in range(first, min(n, first + per_txn)):
                service.add(task, i)
        started = time.perf_counter()
        for first in range(0, n, per_txn):
            self.transact(add, first)
        return n / (time.perf_counter() - started)

    def workers(self, n, batch='auto'):
        """Start ``n`` worker processes (threads of one in-process
        Processor for FileStorage, which serves one process only)."""
        return Workers(self, n, batch)


class Workers:
    def __init__(self, store, n, batch='auto'):
        self.store = store
        self.n = n
        self.batch = batch
        self.procs = []
        self.processor = None
        self.stats = {}

    def argv(self, statsfile):
        """The command line of one worker process, writing ``statsfile``."""
        return [sys.executable, '-m', 'remotetask.tests.scale_agents',
                'process', self.store.uri, statsfile, '60', str(self.batch)]

    def __enter__(self):
        if self.store.kind == 'file':
            from remotetask.processor import Processor
            self.processor = Processor(self.store.db, concurrency=self.n,
                                       lease=60.0, maintenance_interval=30.0,
                                       batch=self.batch)
            self.processor.start()
            return self
        for i in range(self.n):
            statsfile = os.path.join(self.store.workdir, 'w%d.json' % i)
            for old in (statsfile, statsfile + '.ready'):
                if os.path.exists(old):
                    os.remove(old)
            self.procs.append((subprocess.Popen(
                self.argv(statsfile), env=env(), stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL), statsfile))
        # Wait until each has started its Processor (imports, connections).
        deadline = time.monotonic() + 60
        while not all(os.path.exists(f + '.ready') for p, f in self.procs):
            if time.monotonic() > deadline:
                raise TimeoutError('worker processes did not start')
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        import json
        totals = {}
        if self.processor is not None:
            self.processor.stop(timeout=30)
            totals = dict(self.processor.stats)
        for proc, statsfile in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc, statsfile in self.procs:
            proc.wait(60)
            with open(statsfile) as f:
                for key, value in json.load(f).items():
                    if isinstance(value, (int, float)):
                        totals[key] = totals.get(key, 0) + value
        self.stats = totals


def remotetaskDrain(store, workers, n, task='scale.noop', batch='auto'):
    """Start ``workers`` and wait until they run, then enqueue ``n`` jobs
    (1,000 per transaction) and time the drain.  Returns jobs/s and the
    share of the workers' transactions that were retried (conflicts)."""
    store.clean()
    base = store.count()
    with store.workers(workers, batch) as w:
        store.enqueue(n, 1000, task)
        rate = drainRate(lambda: store.count() - base, n)
    stats = w.stats
    errors = store.count('error')
    if errors:
        print('%d jobs ended in error during the drain' % errors)
    conflicts = stats.get('conflicts', 0)
    return rate, conflicts / max(1, stats.get('commits', 0) + conflicts)


def serviceLoopDrain(store, n, batch):
    """The structures' own ceiling, without the Processor: claim ``batch``
    jobs and run them in ONE transaction, in this process."""
    store.clean()
    base = store.count()
    store.enqueue(n, 1000)
    started = time.perf_counter()

    def step(service):
        claimed = service.claim(worker='loop', lease=60, limit=batch,
                                spread=True)
        for job in claimed:
            service.run(job)
        return len(claimed)
    done = 0
    while done < n:
        done += store.transact(step)
    assert store.count() - base == n
    return n / (time.perf_counter() - started)


def remotetaskLatency(store, samples):
    store.clean()
    result = []
    with store.workers(1):
        for i in range(samples + 3):
            started = time.perf_counter()
            jobid = store.transact(lambda service: service.add(
                'scale.noop', i))
            while True:
                store.tm.begin()
                status = store.service.jobs[jobid].status
                store.tm.abort()
                if status == COMPLETED:
                    break
                time.sleep(0.0005)
            result.append(time.perf_counter() - started)
    return percentiles(result[3:])


def opCost(store, queued, ops):
    """Seconds per add and per claim+run (two transactions, as a worker
    does) with ``queued`` jobs waiting."""
    store.clean()
    waiting = store.count('queued')
    if waiting < queued:
        store.enqueue(queued - waiting, 1000)
    add = 1.0 / store.enqueue(ops, 1)
    started = time.perf_counter()
    def claim(service):
        job, = service.claim(worker='bench', lease=60, spread=True)
        return job.id

    def run(service, jobid):
        service.run(service.jobs[jobid])
    for i in range(ops):
        store.transact(run, store.transact(claim))
    cost = (time.perf_counter() - started) / ops
    return add, cost


# -- peers --------------------------------------------------------------------

def command(name):
    """The path of the console script ``name`` (huey_consumer, rq, celery,
    remotetask) installed beside the running Python: a venv's commands are
    found when its python is run without activating the venv.  Falls back
    to PATH, then to the bare name (the error then names it)."""
    import shutil
    here = os.path.join(os.path.dirname(sys.executable), name)
    if os.path.isfile(here) and os.access(here, os.X_OK):
        return here
    return shutil.which(name) or name


def startRedis():
    """Start the local Redis with the machine page's command if it does
    not answer."""
    import redis
    client = redis.Redis.from_url('redis://127.0.0.1:6379')
    try:
        client.ping()
        return 'running'
    except redis.ConnectionError:
        subprocess.run(
            'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 '
            '--save "" --appendonly no --dir /var/lib/redis '
            '--logfile /var/log/redis/ci.log', shell=True, check=True)
        testing.waitForPort(6379)
        return 'started by the bench'


class Peer:
    """Enqueue, drain and round trip for one peer: huey, rq or celery."""

    def __init__(self, name):
        self.name = name
        import peers
        self.peers = peers
        import redis
        self.redis = redis.Redis.from_url(peers.REDIS_URL)
        if name == 'rq':
            from rq import Queue
            self.queue = Queue('bench', connection=redis.Redis.from_url(
                peers.REDIS_URL + '/13'))

    def reset(self):
        if self.name == 'huey':
            self.peers.huey.flush()
        elif self.name == 'rq':
            self.queue.connection.flushdb()
        else:
            for db in (14, 15):
                self.redis.execute_command('SELECT', db)
                self.redis.flushdb()
            self.redis.execute_command('SELECT', 0)

    def enqueue(self, n):
        self.reset()
        started = time.perf_counter()
        self.results = [self.add(i) for i in range(n)]
        return n / (time.perf_counter() - started)

    def add(self, i):
        if self.name == 'huey':
            return self.peers.huey_noop(i)
        if self.name == 'rq':
            return self.queue.enqueue(self.peers.rq_noop, i, result_ttl=3600)
        return self.peers.celery_noop.apply_async((i,))

    def done(self):
        if self.name == 'huey':
            return self.peers.huey.result_count()
        if self.name == 'rq':
            return self.queue.finished_job_registry.count
        import redis
        return redis.Redis.from_url(self.peers.REDIS_URL + '/15').dbsize()

    def ready(self, handle):
        if self.name == 'huey':
            return handle.get(preserve=True) is not None
        if self.name == 'rq':
            return handle.get_status(refresh=True) == 'finished'
        return handle.ready()

    def workerCommand(self, i, n):
        if self.name == 'huey':
            return [command('huey_consumer'), 'peers.huey', '-w', str(n), '-k',
                    'process' if n > 1 else 'thread', '-d', '0.001',
                    '-m', '0.001', '-b', '1.0', '-q']
        if self.name == 'rq':
            return [command('rq'), 'worker', '-u', self.peers.REDIS_URL + '/13',
                    '-w', 'rq.worker.SimpleWorker', '-q', 'bench']
        return [command('celery'), '-A', 'peers', 'worker', '-P', 'solo', '-c', '1',
                '-n', 'w%d@%%h' % i, '--without-gossip', '--without-mingle',
                '--without-heartbeat', '-l', 'WARNING', '-Q', 'celery']

    def workers(self, n):
        count = 1 if self.name == 'huey' else n
        return [subprocess.Popen(self.workerCommand(i, n), cwd=HERE,
                                 env=env(), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
                for i in range(count)]

    def drain(self, workers, n):
        self.enqueue(n)
        procs = self.workers(workers)
        try:
            return drainRate(self.done, n)
        finally:
            stop(procs)

    def latency(self, samples):
        self.reset()
        procs = self.workers(1)
        try:
            time.sleep(2.0)
            result = []
            for i in range(samples + 3):
                started = time.perf_counter()
                handle = self.add(i)
                deadline = time.monotonic() + 30
                while not self.ready(handle):
                    if time.monotonic() > deadline:
                        raise TimeoutError('%s: no result' % self.name)
                    time.sleep(0.0005)
                result.append(time.perf_counter() - started)
            return percentiles(result[3:])
        finally:
            stop(procs)


def stop(procs):
    for proc in procs:
        proc.send_signal(signal.SIGINT)
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def serveLatency(uri, samples):
    """Round trip through ``remotetask serve`` (JSON API over HTTP, its
    in-process Processor): POST /api/jobs, then GET /api/jobs/ID until it
    is completed."""
    import http.client
    import json
    port = testing.freePort()
    proc = subprocess.Popen(
        testing.remotetaskCommand('serve', '--db', uri, '--import',
                                  'remotetask.tests.scale_agents', '--port',
                                  port),
        env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        testing.waitForPort(port, 60, proc=proc)
        conn = http.client.HTTPConnection('127.0.0.1', port, timeout=30)
        headers = {'Content-Type': 'application/json',
                   'Accept': 'application/json'}

        def call(method, path, body=None):
            conn.request(method, path, body and json.dumps(body), headers)
            response = conn.getresponse()
            data = response.read()
            if response.status >= 300:
                raise RuntimeError('%s %s: %s %s' % (method, path,
                                                     response.status, data))
            return json.loads(data)
        result = []
        for i in range(samples + 3):
            started = time.perf_counter()
            job = call('POST', '/api/jobs', {'task': 'scale.noop',
                                             'input': i})
            jobid = job.get('id', job.get('job', {}).get('id'))
            deadline = time.monotonic() + 30
            while call('GET', '/api/jobs/%s' % jobid)['status'] \
                    != COMPLETED:
                if time.monotonic() > deadline:
                    raise TimeoutError('job %s not completed' % jobid)
                time.sleep(0.0005)
            result.append(time.perf_counter() - started)
        conn.close()
        return percentiles(result[3:])
    finally:
        testing.stopProcess(proc)

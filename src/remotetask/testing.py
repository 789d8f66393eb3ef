"""Helpers for tests: real servers on loopback, started and stopped here.

``ZEOServer`` starts ``runzeo`` on 127.0.0.1 on a free port;
``subprocessEnv()`` makes child processes import this checkout's code.
"""
import os
import signal
import socket
import subprocess
import sys
import time

import remotetask

SRC = os.path.dirname(os.path.dirname(os.path.abspath(remotetask.__file__)))


def freePort():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def waitForPort(port, timeout=30.0, host='127.0.0.1', proc=None):
    """Wait until something accepts connections on ``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError('process %s exited with %s before listening '
                               'on %s' % (proc.args, proc.returncode, port))
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError('nothing listens on %s:%s after %ss'
                       % (host, port, timeout))


def subprocessEnv(**extra):
    """``os.environ`` with this checkout's ``src`` first on PYTHONPATH."""
    env = dict(os.environ)
    paths = [SRC] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep)
                     if p]
    env['PYTHONPATH'] = os.pathsep.join(paths)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def stopProcess(proc, timeout=30.0):
    """SIGTERM ``proc`` if it runs, wait up to ``timeout`` seconds, then
    SIGKILL it; return its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def remotetaskCommand(*args):
    """The argv that runs the ``remotetask`` command of this checkout."""
    return [sys.executable, '-m', 'remotetask'] + [str(a) for a in args]


class ZEOServer:
    """A ZEO server (``runzeo``) on 127.0.0.1 serving ``path``.

    Use as a context manager, or call ``start()`` and ``stop()``.  ``stop()``
    then ``start()`` again restarts it on the same port and file (to test
    clients riding out an outage).
    """

    def __init__(self, path, port=None, log=None):
        self.path = path
        self.port = port or freePort()
        self.log = log or (path + '.zeo.log')
        self.proc = None

    @property
    def address(self):
        return ('127.0.0.1', self.port)

    @property
    def uri(self):
        return 'zeo://127.0.0.1:%d' % self.port

    def start(self, timeout=30.0):
        logf = open(self.log, 'ab')
        self.proc = subprocess.Popen(
            [sys.executable, '-m', 'ZEO.runzeo', '-a',
             '127.0.0.1:%d' % self.port, '-f', self.path],
            stdout=logf, stderr=subprocess.STDOUT, env=subprocessEnv())
        logf.close()
        waitForPort(self.port, timeout, proc=self.proc)
        return self

    def stop(self, timeout=30.0):
        if self.proc is not None:
            stopProcess(self.proc, timeout)
        self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def checkConsistency(service):
    """Problems in a service's bookkeeping, as a list of strings (empty
    when the queue, the status indexes and the counters agree with the
    jobs).  Reads every job: for tests and for ``remotetask check``."""
    from remotetask.interfaces import STATUSES, WAITING_STATUSES
    problems = []
    tally = {status: set() for status in STATUSES}
    for jobid, job in service.jobs.items():
        if job.id != jobid:
            problems.append('job %s is stored under %s' % (job.id, jobid))
        tally[job.status].add(jobid)
    for status in STATUSES:
        indexed = set(service.jobIds(status))
        if indexed != tally[status]:
            problems.append('index of %r: %s, jobs: %s' % (
                status, sorted(indexed), sorted(tally[status])))
        if service.count(status) != len(tally[status]):
            problems.append('count of %r is %d, jobs: %d' % (
                status, service.count(status), len(tally[status])))
    tasks = {}
    for jobid, job in service.jobs.items():
        tasks.setdefault(job.task, set()).add(jobid)
    for task, ids in tasks.items():
        if set(service.jobIds(task=task)) != ids:
            problems.append('task index of %r: %s, jobs: %s' % (
                task, sorted(service.jobIds(task=task)), sorted(ids)))
    waiting = {jobid for status in WAITING_STATUSES
               for jobid in tally[status]}
    entries = list(service.queue())
    queued = {jobid for eta, jobid in entries}
    if queued != waiting or len(entries) != len(waiting):
        problems.append('queue holds %s, waiting jobs are %s' % (
            sorted(entries), sorted(waiting)))
    for eta, jobid in entries:
        job = service.jobs.get(jobid)
        if job is not None and job.eta != eta:
            problems.append('job %s: eta %r, queue entry %r'
                            % (jobid, job.eta, eta))
    from remotetask import routing
    length = sum(len(lane) for key, lane in routing.lanes(service))
    if length != len(entries):
        problems.append('queue length %d, entries %d'
                        % (length, len(entries)))
    for key, lane in routing.lanes(service):
        for eta, jobid in lane:
            job = service.jobs.get(jobid)
            if job is not None and (job.queue, -job.priority) != key:
                problems.append('job %s of %r in lane %r' % (
                    jobid, (job.queue, -job.priority), key))
    from remotetask.structures import misplaced
    trees = [('jobs', service.jobs)]
    trees += [('queue lane %r' % (key,), lane)
              for key, lane in routing.lanes(service)]
    trees += [('index of %r' % s, service.jobIds(s)) for s in STATUSES]
    trees += [('task index of %r' % t, service.jobIds(task=t))
              for t in service.taskNames()]
    for name, tree in trees:
        problems.extend('%s: %s' % (name, p) for p in misplaced(tree))
    return problems


def addInLanes(db, lanes, each, task, name=None, per_transaction=1000,
               input=None):
    """Add ``each`` jobs of ``task`` from ``lanes`` threads that run at the
    same time (so each takes a lane of its own), each on a connection of
    its own, ``per_transaction`` jobs per transaction; ``input(lane, i)``
    gives a job's input (default ``(lane, i)``).  Returns the ids, a list
    per thread.  Conflicts are retried."""
    import threading
    import transaction
    from remotetask import db as dbmod
    name = name or dbmod.DEFAULT_SERVICE
    barrier = threading.Barrier(lanes)
    found = [None] * lanes
    errors = []

    def add(lane):
        tm = transaction.TransactionManager()
        conn = db.open(tm)
        ids = found[lane] = []
        try:
            barrier.wait()
            for first in range(0, each, per_transaction):
                for attempt in tm.attempts(20):
                    with attempt:
                        service = dbmod.getService(conn, name)
                        batch = [service.add(task, (lane, i) if input is None
                                             else input(lane, i))
                                 for i in range(first, min(
                                     each, first + per_transaction))]
                ids.extend(batch)
            barrier.wait()      # alive until all are done: lanes differ
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)
            barrier.abort()
        finally:
            conn.close()
    threads = [threading.Thread(target=add, args=(lane,))
               for lane in range(lanes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return found


# -- PostgreSQL ---------------------------------------------------------------

PG_HOST = '127.0.0.1'
PG_PORT = 5432
PG_USER = 'postgres'


def postgresURI(dbname, host=PG_HOST, port=PG_PORT, user=PG_USER, **options):
    """The RelStorage zodburi URI of database ``dbname``:
    ``postgres://USER@HOST:PORT/DBNAME?option=value``."""
    query = '&'.join('%s=%s' % kv for kv in sorted(options.items()))
    return 'postgres://%s@%s:%d/%s%s' % (user, host, port, dbname,
                                         '?' + query if query else '')


def _pgConnect(dbname='postgres', host=PG_HOST, port=PG_PORT, user=PG_USER,
               timeout=5):
    import psycopg2
    conn = psycopg2.connect(dbname=dbname, host=host, port=port, user=user,
                            connect_timeout=timeout)
    conn.autocommit = True
    return conn


def postgresAvailable(host=PG_HOST, port=PG_PORT, user=PG_USER):
    """None if a PostgreSQL server answers (trust auth) at host:port, else
    the reason why not (a string, for ``pytest.skip``)."""
    try:
        import psycopg2  # noqa: F401
        import relstorage  # noqa: F401
    except ImportError as e:
        return 'RelStorage/psycopg2 not installed (%s): pip install ' \
               'remotetask[relstorage]' % e
    try:
        _pgConnect(host=host, port=port, user=user).close()
    except Exception as e:
        return ('no PostgreSQL server answers on %s:%s as %r (.ci/run starts '
                'the local one): %s' % (host, port, user, str(e).strip()))
    return None


class PostgresDatabase:
    """A throwaway database on a running PostgreSQL server (by default the
    local one on 127.0.0.1:5432, trust auth), created by ``create()`` and
    dropped by ``drop()``; a context manager.  ``uri`` is its RelStorage
    zodburi URI."""

    def __init__(self, name=None, host=PG_HOST, port=PG_PORT, user=PG_USER):
        self.name = name or 'remotetask_test_%d_%s' % (
            os.getpid(), os.urandom(4).hex())
        self.host, self.port, self.user = host, port, user

    @property
    def uri(self):
        return postgresURI(self.name, self.host, self.port, self.user)

    def create(self):
        conn = _pgConnect(host=self.host, port=self.port, user=self.user)
        try:
            conn.cursor().execute('CREATE DATABASE "%s"' % self.name)
        finally:
            conn.close()
        return self

    def drop(self):
        conn = _pgConnect(host=self.host, port=self.port, user=self.user)
        try:
            cur = conn.cursor()
            # Clients left behind (a killed worker) would block the drop.
            cur.execute('SELECT pg_terminate_backend(pid) FROM '
                        'pg_stat_activity WHERE datname = %s AND pid <> '
                        'pg_backend_pid()', (self.name,))
            cur.execute('DROP DATABASE IF EXISTS "%s"' % self.name)
        finally:
            conn.close()

    def __enter__(self):
        return self.create()

    def __exit__(self, *exc):
        self.drop()


def _pgBinary(name):
    """Path of a PostgreSQL server program (initdb, pg_ctl)."""
    import glob
    import shutil
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob('/usr/lib/postgresql/*/bin/' + name))
    if not candidates:
        raise FileNotFoundError('%s not found on PATH nor in '
                                '/usr/lib/postgresql/*/bin' % name)
    return candidates[-1]


class ThrowawayPostgres:
    """A PostgreSQL cluster of its own: ``initdb`` into a temporary
    directory and ``pg_ctl start`` on a free port of 127.0.0.1, trust auth.

    PostgreSQL refuses to run as root: as root, the server programs run as
    the ``postgres`` user (``runuser -u postgres``), which owns the
    directory.  ``stop()``/``start()`` take the server down and up again on
    the same port and data (to test clients riding out an outage);
    ``destroy()`` (or leaving the ``with`` block) removes everything.
    ``database(name)`` gives a ``PostgresDatabase`` on this cluster.

    ``parent``: the directory the cluster's directory is made in (default:
    the system's temporary directory), i.e. the filesystem its data lives
    on; as root, the ``postgres`` user must be able to reach it.  ``settings``: server settings (``name: value``) replacing or added
    to ``SETTINGS``, made for tests (no fsync); the benches pass
    ``DURABLE`` to run as a default server does.
    """

    #: A test cluster's settings (besides its address and socket).
    SETTINGS = {'fsync': 'off', 'full_page_writes': 'off',
                'max_connections': '100'}
    #: PostgreSQL's defaults for what ``SETTINGS`` turns off.
    DURABLE = {'fsync': 'on', 'full_page_writes': 'on'}

    def __init__(self, port=None, user=PG_USER, osuser='postgres',
                 parent=None, settings=None):
        import tempfile
        self.port = port or freePort()
        self.user = user
        self.settings = dict(self.SETTINGS, **(settings or {}))
        self.dir = tempfile.mkdtemp(prefix='remotetask-pg-', dir=parent)
        self.data = os.path.join(self.dir, 'data')
        self.log = os.path.join(self.dir, 'server.log')
        self._prefix = []
        if os.geteuid() == 0:
            import pwd
            entry = pwd.getpwnam(osuser)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
            self._prefix = ['runuser', '-u', osuser, '--']
        self.initialized = False

    def _run(self, *argv, timeout=120):
        result = subprocess.run(self._prefix + list(argv), cwd=self.dir,
                                stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, timeout=timeout)
        if result.returncode:
            raise RuntimeError('%s failed (%s):\n%s' % (
                ' '.join(argv), result.returncode,
                result.stdout.decode(errors='replace')))
        return result

    def initdb(self):
        self._run(_pgBinary('initdb'), '-D', self.data, '-U', self.user,
                  '--auth=trust', '-E', 'UTF8', '--no-sync')
        self.initialized = True

    def start(self, timeout=60):
        if not self.initialized:
            self.initdb()
        options = ' '.join(
            ['-c listen_addresses=127.0.0.1 -p %d -k %s' % (self.port,
                                                            self.dir)]
            + ['-c %s=%s' % kv for kv in sorted(self.settings.items())])
        self._run(_pgBinary('pg_ctl'), '-D', self.data, '-l', self.log,
                  '-o', options, '-w', '-t', str(int(timeout)), 'start',
                  timeout=timeout + 10)
        waitForPort(self.port, timeout)
        return self

    def stop(self, timeout=60):
        """Stop the server (fast mode: clients are disconnected)."""
        if self.initialized and os.path.exists(
                os.path.join(self.data, 'postmaster.pid')):
            self._run(_pgBinary('pg_ctl'), '-D', self.data, '-m', 'fast',
                      '-w', '-t', str(int(timeout)), 'stop',
                      timeout=timeout + 10)

    def destroy(self):
        import shutil
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def database(self, name=None):
        return PostgresDatabase(name, PG_HOST, self.port, self.user)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.destroy()


def apiCall(base, method, path, data, user):
    """A JSON API call to the server at ``base`` (HTTP Basic as ``user``,
    a (name, password) pair); the decoded JSON answer."""
    import base64
    import json
    import urllib.request
    credentials = ('%s:%s' % user).encode('utf-8')
    request = urllib.request.Request(
        base + path, method=method,
        data=None if data is None else json.dumps(data).encode(),
        headers={'Content-Type': 'application/json', 'Authorization':
                 'Basic ' + base64.b64encode(credentials).decode()})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


class WorkerProcesses:
    """``remotetask worker`` processes a test starts, each with its output
    in ``logdir``/worker<n>.log.  ``close(graceful)`` ends those still
    running: with ``stopProcess`` (SIGTERM first) or, by default, SIGKILL.
    """

    def __init__(self, logdir):
        self.logdir = logdir
        self.procs = []

    def start(self, uri, tasks, name, *options):
        """Start a worker of service ``name`` in the database at ``uri``,
        importing the module ``tasks``; return its ``Popen``."""
        path = os.path.join(str(self.logdir), 'worker%d.log'
                            % len(self.procs))
        with open(path, 'wb') as log:
            proc = subprocess.Popen(
                remotetaskCommand('worker', '--db', uri, '--import', tasks,
                                  '--service', name, *options),
                env=subprocessEnv(), stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def close(self, graceful=False):
        for proc in self.procs:
            if graceful:
                stopProcess(proc)
            elif proc.poll() is None:
                proc.kill()
                proc.wait()


class ServiceClient:
    """A test's own connection to a database its worker processes use:
    ``service`` begins a new transaction (to see what they committed)."""

    def __init__(self, uri, name):
        from remotetask import db as dbmod
        import transaction
        self._dbmod = dbmod
        self.uri = uri
        self.db = dbmod.openDB(uri)
        self.name = name
        self.tm = transaction.TransactionManager()
        self.conn = self.db.open(self.tm)

    @property
    def service(self):
        self.tm.begin()   # see what the workers committed
        return self._dbmod.getService(self.conn, self.name, create=True)

    def commit(self):
        self.tm.commit()

    def waitFor(self, predicate, timeout=60.0, what='condition',
                pause=0.1):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.service):
                return
            time.sleep(pause)
        raise AssertionError('timed out waiting for %s: %s' % (
            what, self.service.counts()))

    def close(self):
        self.tm.abort()
        self.conn.close()
        self.db.close()

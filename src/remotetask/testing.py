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
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
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
    if len(service._queue) != len(entries):
        problems.append('queue length %d, entries %d'
                        % (len(service._queue), len(entries)))
    return problems

"""Supervised worker processes: ``remotetask worker --processes N``.

Python threads can not be killed: a task that ignores ``cancelled`` (a C
call that hangs, a busy loop) keeps its thread for ever, after its job
was ended for its time limit.  A process can be killed.  So with
``--processes N`` the ``worker`` command runs N child processes, each an
ordinary worker (its own processor, threads and connections), and
supervises them:

- each child writes a small status file (``childStatus``) every tick:
  its pid, its worker id, the jobs its threads run with their time-limit
  deadlines, how many jobs it processed, its RSS;
- a job still running ``kill_after`` seconds past its time limit gets its
  child killed (SIGKILL).  The child's own clock ended the job at its
  limit (``error``, or a retry per ``retry_on``); the supervisor notes on
  it that its process was killed, hands the child's other jobs back to
  the queue, and starts a new child;
- a child that dies by itself (a crash, the kernel's OOM killer) is
  replaced, and its jobs handed back at once, not when their leases
  expire;
- ``max_jobs`` and ``max_memory`` (MB) recycle a child gracefully, like
  Celery's ``--max-tasks-per-child`` and ``--max-memory-per-child``: past
  either, the child stops claiming, finishes its running jobs and exits;
  the supervisor starts another.

The supervisor itself runs no job; it opens the database to hand jobs
back.  Several processes must be able to open the database: ZEO,
RelStorage, or a FileStorage shared by the process holding it.

SIGTERM/SIGINT to the supervisor: each child gets SIGTERM (a graceful
stop within its grace period), then the supervisor exits.
"""
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

log = logging.getLogger('remotetask.supervisor')

#: The environment variable that gives a child its supervisor's pid.
SUPERVISOR_ENV = 'REMOTETASK_SUPERVISOR'

#: Seconds between the supervisor's looks at its children.
TICK = 0.25


# -- the child's side -----------------------------------------------------------

def rssMB():
    """This process's resident set size in MB (Linux), or None."""
    try:
        with open('/proc/self/statm') as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf('SC_PAGE_SIZE') / 1e6
    except (OSError, ValueError, IndexError):
        return None


def writeStatus(path, status):
    tmp = '%s.%d.tmp' % (path, os.getpid())
    with open(tmp, 'w') as f:
        json.dump(status, f)
    os.replace(tmp, path)


def childStatus(processor):
    with processor._lock:
        jobs = [[item.jobid, item.deadline, item.timedOut]
                for item in processor._active.values()]
    return {'pid': os.getpid(), 'worker_id': processor.worker_id,
            'jobs': jobs, 'processed': processor.stats['processed'],
            'claimed': processor.stats['claimed'],
            'rss_mb': rssMB(), 'time': time.time()}


class ChildMonitor:
    """In a child: writes its status file every tick and, past
    ``max_jobs`` processed jobs or ``max_memory`` MB of RSS, asks the
    child to stop gracefully (SIGTERM to itself: ``worker.serve`` stops
    claiming, lets the running jobs finish and returns)."""

    def __init__(self, processor, path, max_jobs=None, max_memory=None,
                 tick=TICK):
        self.processor = processor
        processor.max_jobs = max_jobs
        self.path = path
        self.max_jobs = max_jobs
        self.max_memory = max_memory
        self.tick = tick
        self.recycling = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name='remotetask child monitor')

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()

    def _loop(self):
        # (Given by the supervisor: it may be gone before we get here.)
        parent = int(os.environ.get(SUPERVISOR_ENV) or os.getppid())
        while not self._stop.wait(self.tick):
            if os.getppid() != parent:
                # The supervisor is gone (killed outright): stop too
                # rather than run on unsupervised.
                log.error('child %d: its supervisor (pid %d) is gone; '
                          'stopping', os.getpid(), parent)
                os.kill(os.getpid(), signal.SIGTERM)
                return
            try:
                status = childStatus(self.processor)
                status['recycling'] = self.recycling
                writeStatus(self.path, status)
            except Exception:
                log.exception('child status not written')
                continue
            if self.recycling is None:
                self.recycling = self._limit(status)
                if self.recycling:
                    log.warning('child %d recycles: %s', os.getpid(),
                                self.recycling)
                    os.kill(os.getpid(), signal.SIGTERM)

    def _limit(self, status):
        if self.max_jobs is not None and status['claimed'] >= self.max_jobs:
            # (The processor claims no more: see Processor.max_jobs.)
            return 'took %d jobs (--max-jobs-per-child %d)' % (
                status['claimed'], self.max_jobs)
        rss = status['rss_mb']
        if self.max_memory is not None and rss is not None \
                and rss > self.max_memory:
            return 'RSS %.0f MB > %g MB (--max-memory-per-child)' % (
                rss, self.max_memory)
        return None


# -- the supervisor -------------------------------------------------------------

class Child:
    def __init__(self, proc, statusPath):
        self.proc = proc
        self.statusPath = statusPath
        self.killed = None      # (jobid, why) when the supervisor killed it

    @property
    def pid(self):
        return self.proc.pid

    def status(self):
        try:
            with open(self.statusPath) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None


class Supervisor:
    """Runs ``processes`` children made by ``command(statusPath)`` (an
    argv) and keeps them going (see the module docstring).  ``runner`` is
    a ``db.ServiceRunner`` of the service, for handing jobs back."""

    def __init__(self, command, processes, runner, kill_after=5.0,
                 grace=30.0, env=None, tick=TICK):
        if isinstance(processes, bool) or not isinstance(processes, int) \
                or processes < 1:
            raise ValueError('processes must be an integer >= 1, not %r'
                             % (processes,))
        if isinstance(kill_after, bool) or not isinstance(
                kill_after, (int, float)) or not kill_after >= 0:
            raise ValueError('kill_after must be >= 0 seconds, not %r'
                             % (kill_after,))
        self.command = command
        self.processes = processes
        self.runner = runner
        self.kill_after = float(kill_after)
        self.grace = float(grace)
        self.env = env
        self.tick = tick
        self.children = []
        self.started = 0            # children started in all
        self.kills = 0
        self.replaced = 0
        self._dir = tempfile.mkdtemp(prefix='remotetask-supervisor-')
        self._stop = threading.Event()

    # -- children --

    def _spawn(self):
        path = os.path.join(self._dir, 'child-%d.json' % self.started)
        self.started += 1
        env = dict(os.environ if self.env is None else self.env)
        env[SUPERVISOR_ENV] = str(os.getpid())
        proc = subprocess.Popen(self.command(path), env=env)
        child = Child(proc, path)
        self.children.append(child)
        log.info('child %d started', proc.pid)
        return child

    def start(self):
        for _ in range(self.processes):
            self._spawn()

    def stop(self):
        """Stop the children gracefully (SIGTERM, then SIGKILL after their
        grace period and some), hand back what is left."""
        self._stop.set()
        for child in self.children:
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace + 10
        for child in list(self.children):
            try:
                child.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait()
            self._handBack(child, 'its worker process stopped')
        self.children = []
        self._cleanup()

    def _cleanup(self):
        for name in os.listdir(self._dir):
            try:
                os.unlink(os.path.join(self._dir, name))
            except OSError:
                pass
        try:
            os.rmdir(self._dir)
        except OSError:
            pass

    # -- the loop --

    def check(self, now=None):
        """One look at the children: kill the ones running a job too long
        past its time limit, replace the ones that ended."""
        now = time.time() if now is None else now
        for child in list(self.children):
            if child.proc.poll() is None:
                self._checkLimits(child, now)
                continue
            self.children.remove(child)
            code = child.proc.returncode
            status = child.status() or {}
            if child.killed is not None:
                self._endKilled(child)
            elif code == 0 and status.get('recycling'):
                log.info('child %d recycled (%s)', child.pid,
                         status['recycling'])
            else:
                log.error('child %d died by itself (exit status %s); its '
                          'jobs are handed back', child.pid, code)
            self._handBack(child, 'its worker process (pid %d) ended'
                           % child.pid)
            if not self._stop.is_set():
                self.replaced += 1
                self._spawn()

    def _checkLimits(self, child, now):
        status = child.status()
        if not status or child.killed is not None:
            return
        for jobid, deadline, timedOut in status.get('jobs', ()):
            if deadline is not None and now > deadline + self.kill_after:
                child.killed = (jobid, 'killed after its time limit: still '
                                'running %gs past it (its task ignored '
                                'cancelled); its process %d was killed'
                                % (self.kill_after, child.pid))
                log.error('job %s: %s', jobid, child.killed[1])
                self.kills += 1
                try:
                    child.proc.kill()
                except OSError:
                    pass
                return

    def _workerPrefix(self, child):
        """What the ids of the child's threads start with: its worker id
        (children get no --worker-id: ``host:pid``), also when it died
        before it wrote a status."""
        status = child.status() or {}
        worker = status.get('worker_id') or '%s:%d' % (
            socket.gethostname(), child.pid)
        return worker + '/'

    def _endKilled(self, child):
        """The job that got its child killed: ended by the child's clock
        at its time limit (error, or a retry); say why its process went.
        Still processing (the clock had no time to end it): ended here."""
        jobid, why = child.killed
        prefix = self._workerPrefix(child)

        def end(service):
            from remotetask.interfaces import PROCESSING, TimeLimitExceeded
            job = service.jobs.get(jobid)
            if job is None:
                return
            if job.status == PROCESSING and prefix and (
                    job.worker or '').startswith(prefix):
                service.giveUp(job, why, TimeLimitExceeded(why))
            elif job.error and 'killed' not in job.error:
                job.error = '%s; %s' % (job.error, why)
        try:
            self.runner(end)
        except Exception:
            log.exception('job %s: could not record the kill', jobid)

    def _handBack(self, child, reason):
        prefix = self._workerPrefix(child)

        def handBack(service):
            from remotetask.interfaces import PROCESSING
            handed = []
            for jobid in list(service.jobIds(PROCESSING)):
                job = service.jobs[jobid]
                if (job.worker or '').startswith(prefix):
                    service.handBack(job, reason=reason)
                    handed.append(jobid)
            return handed
        try:
            handed = self.runner(handBack)
        except Exception:
            log.exception('could not hand back the jobs of child %d; their '
                          'leases will expire', child.pid)
            return []
        for jobid in handed:
            log.warning('job %s handed back: %s', jobid, reason)
        return handed

    def run(self, signals=(signal.SIGTERM, signal.SIGINT)):
        """Start the children and supervise them until a signal; return
        the exit status (0).  From the main thread."""
        received = []

        def handler(signum, frame):
            received.append(signum)
            self._stop.set()

        previous = {s: signal.signal(s, handler) for s in signals}
        try:
            self.start()
            log.info('supervising %d worker process(es): %s',
                     self.processes,
                     ', '.join(str(c.pid) for c in self.children))
            while not self._stop.wait(self.tick):
                self.check()
            log.warning('%s received: stopping the children',
                        signal.Signals(received[0]).name if received
                        else 'stop')
            self.stop()
            return 0
        finally:
            for s, old in previous.items():
                signal.signal(s, old)


def childCommand(base, statusPath):
    """The argv of a child: ``base`` (the worker command and its options)
    and its status file."""
    return [sys.executable, '-m', 'remotetask'] + list(base) + [
        '--child-status', statusPath]

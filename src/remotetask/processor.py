"""Processors: run the jobs of a stored service from threads of their own.

See ``interfaces.IProcessor`` and the "Transactions and concurrency"
section of ``interfaces``.  A processor has

- ``concurrency`` worker threads; each has its own connection and its own
  transaction manager (the thread's ``transaction.manager``, so a task that
  calls ``transaction.commit()`` acts on the job's transaction), claims
  jobs in a short transaction and runs each one in ``tm.attempts()``;
- one clock thread with a connection of its own (``remotetask.clock``),
  which renews the leases of the running jobs, enforces their time limits,
  calls ``service.maintain()`` every ``maintenance_interval`` seconds and
  wakes idle workers when a job is due;
- a hook on the database's invalidations (``remotetask.threads``), which
  wakes idle workers as soon as another connection (in this process or, over
  ZEO, in another) changes the queue.

Each job is logged on the ``remotetask.worker`` logger.
"""
import logging
import math
import os
import random
import socket
import threading
import time
import traceback
from contextlib import nullcontext

import transaction
import zope.component
import zope.interface
from transaction.interfaces import TransientError
from ZODB.POSException import POSKeyError

from remotetask import (
    health, interfaces, numbers, pgnotify, quiet, registry, routing)
from remotetask.clock import Clock
from remotetask.interfaces import ServiceNotStoredError
from remotetask.root import DEFAULT_SERVICE, getService
from remotetask.structures import movePartition, setHome
from remotetask.task import policy
from remotetask.threads import (
    abort, close, errorText, hooks, pause, storageErrors)

log = logging.getLogger('remotetask.worker')

#: What ``_attempts`` returns when the claim was lost.
LOST = 'lost'


#: The states of a claimed job in its processor (``_Active.state``).
CLAIMED, RUNNING, HANDED = 'claimed', 'running', 'handed back'


class _Active:
    """A job claimed by one of this processor's threads (``owner``)."""

    def __init__(self, jobid, token, task, deadline, now, owner=None):
        self.jobid = jobid
        self.token = token
        self.task = task
        self.deadline = deadline    # epoch seconds (time limit) or None
        self.renewed = now
        self.owner = owner
        self.state = CLAIMED
        self.begun = None           # time.monotonic() when its run began
        # ... and when its task returned (a job of a group stays RUNNING
        # until the group commits: it is not what its thread is busy with).
        self.ended = None
        self.cpu = None             # CPU seconds of its thread for the run
        self.ran = None             # (wall, CPU) seconds of the run alone
        self.cancelled = threading.Event()
        self.cancelled.requested = False    # set with it on a cancel
        self.lost = False
        self.timedOut = False
        self.error = None

    def job(self, service):
        """The job in ``service`` if this claim still holds it, else None
        (its lease expired, or it was ended or handed back elsewhere)."""
        job = service.jobs.get(self.jobid)
        if job is None or not service.owns(job, self.token):
            return None
        return job

    def run(self, service, reporter, around=None):
        """Run the job if the claim still holds; its outcome or LOST.
        ``around(service, job)``: a context manager entered around the run
        (see ``Processor``)."""
        job = self.job(service)
        if job is None:
            return LOST
        with around(service, job) if around else nullcontext():
            outcome = service.run(job, reporter=reporter.report,
                                  cancelled=self.cancelled)
        self.error = job.error
        return outcome

    def runDeferred(self, service, reporter, around=None):
        """Run the task (``service.run(defer=True)``); return a callable
        that records the outcome and returns it (or LOST), for a group
        that records its jobs' outcomes after all their tasks ran."""
        job = self.job(service)
        if job is None:
            return lambda: LOST
        with around(service, job) if around else nullcontext():
            record = service.run(job, reporter=reporter.report,
                                 cancelled=self.cancelled, defer=True)

        def finish():
            with around(service, job) if around else nullcontext():
                outcome = record()
            self.error = job.error
            return outcome
        return finish


#: A group of claimed jobs run in one transaction commits after this many
#: seconds (see Processor._runGroup).
GROUP_SECONDS = 0.2

#: ``batch='auto'`` (the default): a claim takes about this many seconds of
#: work, judged by how long this processor's recent jobs took (one job
#: until it has seen one run), and at most ``AUTO_MAX`` jobs.
AUTO_SECONDS = 0.1
AUTO_MAX = 50

#: The weight of a job's duration in the moving averages of the recent
#: jobs' durations and CPU shares (``Processor._measured``).
MEASURE_WEIGHT = 0.2

#: Seconds a stopping processor waits on a thread at a time (``stop``),
#: so that the main thread handles signals in between.
JOIN_SLICE = 0.1

#: Claimed jobs not started this many seconds after their claim while their
#: thread runs a job that has taken longer than that go back to the queue
#: (for the other threads and workers): a job claimed ahead in a batch
#: never waits behind a long job.  With ``batch='auto'``, those of a claim
#: not started this long after it go back too (the estimate was wrong).
HOLD_SECONDS = 1.0

#: Waking idle workers for new work (see ``Processor._onInvalidate``): a
#: commit that changed k lanes' queues wakes k idle threads of a process,
#: not all of them; a thread whose claim took a full batch wakes one more.
#: Across processes, a worker waits a random part of its *stagger* before
#: it claims; the stagger starts at 0, doubles (from STAGGER_MIN, up to
#: STAGGER_MAX seconds) whenever a claim conflicted (another process took
#: the same job), and halves whenever one took a job at once, so a lone
#: worker never waits; while it is not 0, a claim takes at most twice what
#: the thread's last one found (see docs/design.md, "herd").
STAGGER_MIN = 0.002
STAGGER_MAX = 0.05

#: Seconds between two readings of the worker registry for the claim slots
#: (``Processor._home``; a change of the registry's BTree, a processor
#: that came or went, makes the next claim read it at once).  Until a
#: processor has its slots (its first heartbeat), its claims start at a
#: partition drawn at random.
SLOTS_REFRESH = 10.0

#: A job whose thread's CPU time is at least this share of its wall time is
#: CPU-bound; while the recent jobs are short (under ``GROUP_SECONDS / 2``)
#: and CPU-bound, one thread of a processor at a time claims and runs them
#: (``Processor._mayClaim``); the others wait until the jobs are measured
#: as waiting or long or the processor stops (``Processor._gate``), and
#: look again every ``GATE_WAIT`` seconds (the runner left its role, its
#: claim having found nothing, or is stuck in a long job): every
#: wake-up of a waiting thread takes the interpreter lock from the runner
#: (with 0.05 s, 4 threads used 5-10 % more CPU per no-op job than one).
CPU_BOUND = 0.5
GATE_WAIT = 0.25

#: The thread committing a claim (a claim only takes jobs away: the
#: invalidation of its own commit wakes nobody).
_claiming = threading.local()

#: How many times the failure path tries to record a job's end.
GIVE_UP_ATTEMPTS = 20


def _deadline(service, job):
    """Epoch seconds when the claimed job's time limit is over, or None.

    A limit that is not a number (stored by an old version, or set on the
    job by hand) must not make every claim fail: it is not enforced here,
    and ``service.run`` ends the job ``error`` when it compares it.
    """
    limit = policy(service._getTask(job.task), job, 'time_limit')
    if limit is None:
        return None
    try:
        return job.started + float(limit)
    except (TypeError, ValueError):
        log.error('job %s: its time limit %r is not a number of seconds',
                  job.id, limit)
        return None


def defaultWorkerId():
    return '%s:%d' % (socket.gethostname(), os.getpid())


@zope.interface.implementer(interfaces.IProcessor)
class Processor(Clock):
    """See IProcessor.

    ``Processor(db, name)`` serves the service at ``root[name]`` of ``db``
    (or the one with oid ``oid``); ``Processor(db, service)`` the stored
    service handed to it (it finds it by its oid in each of its own
    connections).  ``concurrency``: worker threads.
    ``lease``: seconds a claim holds unless renewed.  ``worker_id``: the
    name recorded on the jobs (default ``host:pid``; each thread adds
    ``/N``).  ``batch``: jobs claimed per transaction: ``'auto'`` (the
    default) claims about ``AUTO_SECONDS`` (0.1 s) of work as judged by the
    durations of the recent jobs, one at a time for jobs that take that
    long or more, up to ``AUTO_MAX`` (50) very short ones, and hands back
    the jobs it could not start within ``HOLD_SECONDS`` (1 s); a number
    claims up to that many, always (1: strictly one at a time).  Claimed
    jobs run in groups that commit once per ``GROUP_SECONDS`` (0.2 s), so
    a batch of short jobs costs a few commits rather than one each; their
    time limits count from the claim.  ``poll_interval``: longest idle
    wait.
    ``maintenance_interval``: seconds between ``service.maintain()`` calls.
    ``grace``: default ``timeout`` of ``stop()``.  ``attempts``: how many
    times a job's transaction is tried when it conflicts.  ``queues``: the
    names of the queues it takes jobs from, the first drained before the
    next (None: every queue, by priority).  ``around``: a callable
    ``around(service, job)`` returning a context manager that each run of a
    job is made in, in the job's transaction (the service is the one of the
    worker's connection): the place for an application's context, e.g.
    ``remotetask.zope`` sets the service's site and a Zope user there.  If
    entering it fails, the job fails with that error.  ``heartbeat``:
    seconds between the updates of its entry in the worker registry
    (``remotetask.registry``; ``kind`` is recorded there: ``thread``,
    ``worker`` or ``serve``).  A bad option raises ``ValueError`` naming
    it.
    """

    def __init__(self, db, name=DEFAULT_SERVICE, concurrency=1, lease=30.0,
                 worker_id=None, batch='auto', poll_interval=1.0,
                 maintenance_interval=5.0, grace=30.0, attempts=5, oid=None,
                 queues=None, around=None, heartbeat=registry.INTERVAL,
                 kind='thread'):
        if batch != 'auto' and (not numbers.isInt(batch) or batch < 1):
            raise ValueError("batch must be 'auto' or an integer >= 1, not %r"
                             % (batch,))
        for what, value, low in (('concurrency', concurrency, 1),
                                 ('attempts', attempts, 1)):
            if not numbers.isInt(value) or value < low:
                raise ValueError('%s must be an integer >= %d, not %r'
                                 % (what, low, value))
        for what, value in (('lease', lease), ('poll_interval', poll_interval),
                            ('maintenance_interval', maintenance_interval),
                            ('heartbeat', heartbeat)):
            if not numbers.isNumber(value) or not 0 < value < math.inf:
                raise ValueError('%s must be a positive number of seconds, '
                                 'not %r' % (what, value))
        if not numbers.isNumber(grace) or not 0 <= grace < math.inf:
            raise ValueError('grace must be >= 0 seconds, not %r' % (grace,))
        if around is not None and not callable(around):
            raise ValueError('around must be callable, not %r' % (around,))
        self.queues = routing.checkQueues(queues)
        if not isinstance(name, str):     # handed the service itself
            oid = _key(name)[1]
            name = name.__name__ or DEFAULT_SERVICE
        self.db = db
        self.name = name
        self.oid = oid
        self.concurrency = concurrency
        self.lease = float(lease)
        self.worker_id = worker_id or defaultWorkerId()
        self.batch = batch
        self.poll_interval = float(poll_interval)
        self.maintenance_interval = float(maintenance_interval)
        self.grace = float(grace)
        self.attempts = attempts
        self.around = around
        self.tick = max(0.05, min(0.5, self.lease / 4.0, self.poll_interval))
        self._lock = threading.Lock()
        # Threads that may not claim (one runner: _mayClaim) wait on it.
        self._gate = threading.Condition(self._lock)
        self._claimLock = threading.Lock()
        self._wakeup = threading.Condition()
        self._generation = 0
        self._tickets = 0       # wake-ups for single threads (_wakeSome)
        self._stagger = 0.0     # seconds (STAGGER_MIN/MAX)
        self._idle = 0
        self._active = {}
        self._threads = []
        self._clock = None
        self._stopping = threading.Event()   # no more claims
        self._halt = threading.Event()       # grace is over
        self._clockStop = threading.Event()
        self._local = threading.local()     # tries of the thread's claim
        self._watched = None
        self._slots = None      # (offset, total, registry oid): _home
        self._slotsDue = 0.0
        self._slotsVersion = 0  # invalidations of the registry seen
        self._registryOid = None    # its BTree's, once registered
        self._duration = None   # seconds a job took lately (moving average)
        self._cpuShare = None   # their CPU time / wall time (the same)
        self._runner = None     # the thread that claims alone (_mayClaim)
        self._taskDurations = {}    # the same, task by task
        self._measures = 0          # jobs measured (_measured)
        self._taskMeasures = {}     # the same, task by task
        self.registration = registry.Registration(self, kind, heartbeat)
        self._stats = dict.fromkeys(
            ('claimed', 'processed', 'completed', 'failed', 'retried',
             'lost', 'handed_back', 'commits', 'conflicts', 'storage_errors',
             'maintenance_runs', 'reaped', 'expired'), 0)

    #: Claim no more than this many jobs in all (None: no limit).
    max_jobs = None

    def __repr__(self):
        return '<Processor %s of %r x%d>' % (self.worker_id,
                                              self.oid or self.name,
                                              self.concurrency)

    # -- public API ---------------------------------------------------------

    @property
    def running(self):
        """See IProcessor."""
        return any(t.is_alive() for t in self._threads) or bool(
            self._clock is not None and self._clock.is_alive())

    @property
    def stats(self):
        """See IProcessor."""
        with self._lock:
            stats = dict(self._stats)
            stats['running'] = len(self._active)
        stats['claim_size'] = self.claimSize()
        return stats

    def taskNames(self):
        """The names of the tasks this processor runs (those registered in
        this process)."""
        return taskNames()

    def runningJobs(self):
        """The ids of the jobs claimed by this processor's threads."""
        with self._lock:
            return list(self._active)

    def wake(self):
        """See IProcessor."""
        with self._wakeup:
            self._generation += 1
            self._wakeup.notify_all()

    def start(self):
        """See IProcessor."""
        if self.running:
            raise RuntimeError('%r is already running' % self)
        self._stopping.clear()
        self._halt.clear()
        self._clockStop.clear()
        self._watched = self._checkService()
        hooks.add(self.db, self._onInvalidate)
        # Registered before the first claim: its claim slots are known
        # from then on (else its first claims take from any partition).
        self._beatNow()
        # RelStorage on PostgreSQL: woken by NOTIFY rather than by polling.
        self._dueHeard = None       # the clock looks at the queue first
        self._listener = pgnotify.listen(self.db, self._onNotify)
        self._clock = threading.Thread(target=self._clockLoop, daemon=True,
                                       name='remotetask clock %s'
                                       % self.worker_id)
        self._threads = [
            threading.Thread(target=self._workLoop, args=(i,), daemon=True,
                             name='remotetask worker %s/%d'
                             % (self.worker_id, i))
            for i in range(1, self.concurrency + 1)]
        self._clock.start()
        for t in self._threads:
            t.start()
        log.info('processor %s started: %d thread(s), lease %gs',
                 self.worker_id, self.concurrency, self.lease)

    def stop(self, timeout=None):
        """See IProcessor.  Returns the ids of the jobs handed back."""
        timeout = self.grace if timeout is None else timeout
        self._stopping.set()
        self.wake()
        with self._gate:
            self._gate.notify_all()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            # In slices: a signal that the kernel delivered to another
            # thread is handled by the main thread only when it runs
            # Python again, and a join blocks in C until it returns (a
            # second Ctrl-C during a 30 s grace waited out the grace).
            while t.is_alive():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                t.join(min(JOIN_SLICE, left))
        handed = []
        if any(t.is_alive() for t in self._threads):
            self._halt.set()
            with self._lock:
                active = list(self._active.values())
            # Hand back first: a task that stops when cancelled must not
            # get to record its outcome before.
            handed = self._handBack(active, 'the worker stopped before it '
                                    'finished (grace period over)')
            for item in active:
                item.cancelled.set()
            for t in self._threads:
                t.join(0.5)
        self._clockStop.set()
        if self._clock is not None:
            self._clock.join(10.0)
        self._unregister()
        hooks.remove(self.db, self._onInvalidate)
        pgnotify.unlisten(self.db, self._onNotify)
        self._listener = None
        stuck = [t.name for t in self._threads if t.is_alive()]
        if stuck:
            log.warning('threads still running a task after stop (their '
                        'results will be dropped): %s', ', '.join(stuck))
        log.info('processor %s stopped; %s', self.worker_id, self.stats)
        return handed

    # -- the service in a connection ----------------------------------------

    def _service(self, conn):
        if self.oid is not None:
            return conn.get(self.oid)
        return getService(conn, self.name)

    def _checkService(self):
        """Find the service once (clear error if missing); return the oids
        of its queues' lengths, which change whenever the queues do."""
        tm = transaction.TransactionManager()
        conn = self.db.open(tm)
        try:
            try:
                service = self._service(conn)
                return _lengths(service)
            except POSKeyError:
                raise ServiceNotStoredError(
                    'the service (oid %r) is not committed to the database '
                    'yet: commit the transaction that added it first'
                    % (self.oid,))
        finally:
            tm.abort()
            conn.close()

    def _beatNow(self):
        """The registry's first heartbeat, now (the clock's otherwise)."""
        tm = transaction.TransactionManager()
        conn = self.db.open(tm)
        try:
            self._beat(tm, conn, time.time())
            # Its changes count from now on, also those that come before
            # the first claim has read the slots (_onInvalidate).
            tm.begin()
            workers = registry._container(self._service(conn))
            self._registryOid = getattr(workers, '_p_oid', None)
        except Exception as e:
            log.warning('%s: could not register yet (%s); the clock will',
                        self.worker_id, errorText(e))
        finally:
            abort(tm)
            conn.close()

    def _unregister(self):
        """Remove this processor's entry from the registry (a clean stop);
        if that fails, it expires."""
        tm = transaction.TransactionManager()
        conn = None
        try:
            conn = self.db.open(tm)
            for attempt in tm.attempts(5):
                with attempt:
                    self.registration.remove(self._service(conn))
        except Exception as e:
            log.warning('processor %s: could not remove its registry entry '
                        '(%s); it expires', self.worker_id, errorText(e))
        finally:
            abort(tm)
            if conn is not None:
                close(conn)

    def _count(self, **counts):
        with self._lock:
            for key, n in counts.items():
                self._stats[key] += n

    # -- waking up -----------------------------------------------------------

    def _onInvalidate(self, oids):
        # Called by the storage's thread (or the committing one): only set
        # a flag.  As many idle threads as lanes changed: one add wakes one
        # thread, not the herd (a full claim wakes the next, _claim).
        slots = self._slots
        oid = self._registryOid if slots is None else slots[2]
        if oid is not None and oid in oids:
            # A processor came or went: re-read (a reading from a snapshot
            # taken before this invalidation does not count, _home).
            self._slotsVersion += 1
            self._slotsDue = 0.0
        watched = self._watched
        if not watched or getattr(_claiming, 'active', False):
            return
        changed = len(watched.intersection(oids))
        if changed:
            self._wakeSome(changed)

    def _wakeSome(self, n):
        """Wake ``n`` idle threads (or the next ``n`` that go idle)."""
        with self._wakeup:
            self._tickets = min(self.concurrency, self._tickets + n)
            self._wakeup.notify(n)

    def _onNotify(self, payload):
        # A NOTIFY of pgnotify (the listener's thread): a job of the
        # service named ``payload`` waits (None: maybe one was missed).
        if not payload or payload == self.name:
            self.wake()

    def _idleTimeout(self):
        """The longest idle wait: ``poll_interval``, or none while a
        LISTEN connection stands (NOTIFY wakes the threads for new jobs,
        the clock's looks when a waiting job's time comes or one was
        missed: ``remotetask.quiet``)."""
        if pgnotify.quiet(self._listener):
            return None
        return self.poll_interval

    def _idleWait(self, generation):
        """Wait for a wake-up; True if it was one of ``_wakeSome``'s."""
        with self._wakeup:
            self._idle += 1
            try:
                self._wakeup.wait_for(
                    lambda: (self._generation != generation
                             or self._tickets
                             or self._stopping.is_set()),
                    timeout=self._idleTimeout())
                if self._tickets and self._generation == generation:
                    self._tickets -= 1
                    return True
                return False
            finally:
                self._idle -= 1

    def _staggered(self, claimed, tries):
        """Adapt the stagger to how a claim went (``tries`` > 1: it
        conflicted)."""
        with self._lock:
            if tries <= 1:
                # Took a job at once; nothing found says little (our own
                # claim's commit, seen over ZEO, wakes a thread too).
                if claimed:
                    self._stagger = 0.0 if self._stagger <= STAGGER_MIN \
                        else self._stagger / 2
            else:
                self._stagger = min(STAGGER_MAX,
                                    max(STAGGER_MIN, self._stagger * 2))

    # -- worker threads ------------------------------------------------------

    def _workLoop(self, index):
        worker = '%s/%d' % (self.worker_id, index)
        self._local.index = index
        # The thread's own manager: what transaction.commit(), .savepoint()
        # and .abort() in a task (and in service.run) act on.
        tm = transaction.manager.manager
        conn = None
        reporter = _Reporter(self)
        failures = 0
        try:
            while not self._stopping.is_set():
                generation = self._generation
                if not self._mayClaim(index):
                    # Another thread of this process runs short CPU-bound
                    # jobs: a second one would only share the interpreter
                    # lock with it (and reload what it commits).
                    self._waitGate(index)
                    continue
                if self._stagger:
                    # Claims of other worker processes took the same jobs
                    # lately: let one of them be first.
                    self._stopping.wait(random.uniform(0, self._stagger))
                try:
                    if conn is None:
                        conn = self.db.open(tm)
                    claimed = self._claim(tm, conn, worker)
                    failures = 0
                except storageErrors() as e:
                    abort(tm)
                    health.check(e)     # a full disk: noted (/metrics)
                    self._count(storage_errors=1)
                    log.warning('%s: database unavailable (%s); waiting',
                                worker, errorText(e))
                    failures += 1
                    pause(failures, self._stopping)
                    continue
                except Exception:
                    abort(tm)
                    log.exception('%s: claiming failed; trying again', worker)
                    failures += 1
                    pause(failures, self._stopping)
                    continue
                self._staggered(claimed, getattr(self._local, 'tries', 0))
                if not claimed:
                    self._leave(index)
                    self._idleWait(generation)
                    continue
                self._runClaimed(tm, conn, worker, claimed, reporter)
        finally:
            abort(tm)
            reporter.close()
            if conn is not None:
                close(conn)

    def _mayClaim(self, index):
        """False while the recent jobs were short and CPU-bound (their
        thread's CPU time most of their wall time) and another thread of
        this processor is the one that claims them (the *runner*, until
        a claim of it finds nothing): threads of one process run Python
        one at a time, so a second thread would not add throughput, only
        the switching between them and the reloading of the objects the
        other's commits change (measured: 4 threads of one process drained
        no-op jobs at 0.67-0.89x of one).  Jobs that wait (I/O, sleep) or
        take long are claimed by every thread; until the first job has run,
        one thread claims."""
        if self.concurrency == 1:
            return True
        with self._lock:
            return self._mayClaimLocked(index)

    def _waitGate(self, index):
        """Wait (``_gate``) until this thread may claim (``_mayClaim``), or
        ``GATE_WAIT`` seconds."""
        with self._gate:
            if not self._stopping.is_set() and \
                    not self._mayClaimLocked(index):
                self._gate.wait(GATE_WAIT)

    def _gateOpen(self):
        """True if the recent jobs wait or take long: every thread claims
        (call with ``_lock`` held).  Until a job has been measured, one
        thread claims too (one job at a time, claimSize): its first run
        says which case it is."""
        share, duration = self._cpuShare, self._duration
        return share is not None and duration is not None and (
            share < CPU_BOUND or duration >= GROUP_SECONDS / 2)

    def _mayClaimLocked(self, index):
        """``_mayClaim`` with ``_lock`` held."""
        if self._gateOpen():
            self._runner = None
            return True
        if self._runner is None or self._runnerStuck():
            # A runner busy with one job for longer than short jobs
            # take (the averages say short, this one is not) passes
            # the role on: its claimed-ahead jobs go back to the queue
            # after HOLD_SECONDS (_releaseHeld), for this thread.
            self._runner = index
        return self._runner == index

    def _runnerStuck(self):
        """True if the runner thread has been running one job for more
        than ``GROUP_SECONDS / 2`` (call with ``_lock`` held)."""
        owner = '%s/%d' % (self.worker_id, self._runner)
        now = time.monotonic()
        return any(item.owner == owner and _busy(item, now, GROUP_SECONDS / 2)
                   for item in self._active.values())

    def _leave(self, index):
        """Thread ``index`` found nothing to claim: it is not the runner
        any more (see ``_mayClaim``)."""
        with self._lock:
            if self._runner == index:
                self._runner = None

    def _forget(self, items):
        with self._lock:
            for item in items:
                self._active.pop(item.jobid, None)

    def claimSize(self):
        """How many jobs the next claim takes (see ``batch``)."""
        if self.batch != 'auto':
            return self.batch
        duration = self._duration
        if duration is None:
            return 1
        return max(1, min(AUTO_MAX, int(AUTO_SECONDS / max(duration, 1e-4))))

    def _measured(self, elapsed, task=None, cpu=None):
        """A job's run took ``elapsed`` seconds (``cpu`` of them on its
        thread's CPU): moving averages (weight ``MEASURE_WEIGHT``) of the
        durations, overall and by task, and of the CPU share.  The first
        measure of each is replaced by the second rather than averaged:
        the first job ran alone from a cold start (its objects loaded one
        by one, over ZEO a round trip each), so a 10 ms task measured 20-35
        ms, and the claims grew 1, 3, 4, 6, 7, 8, 9 over the first 0.7 s of
        a drain instead of 1, 9 (see ``claimSize``)."""
        with self._lock:
            self._measures += 1
            weight = _weight(self._measures)
            if cpu is not None and elapsed > 0:
                share = min(1.0, cpu / elapsed)
                last = self._cpuShare
                self._cpuShare = share if last is None else (
                    last + weight * (share - last))
            if self._duration is None:
                self._duration = elapsed
            else:
                self._duration += weight * (elapsed - self._duration)
            if task is not None:
                seen = self._taskMeasures.get(task, 0) + 1
                self._taskMeasures[task] = seen
                last = self._taskDurations.get(task)
                self._taskDurations[task] = elapsed if last is None else (
                    last + _weight(seen) * (elapsed - last))
            if self._gateOpen():
                self._gate.notify_all()     # every thread claims now

    def _claim(self, tm, conn, worker):
        """Claim up to ``claimSize()`` jobs in a short transaction (none
        once ``max_jobs`` were claimed: a supervised child about to be
        recycled, see remotetask.supervisor)."""
        limit = self.claimSize()
        # While other processes' claims collide with ours (a stagger) and
        # the queue is thin, take what a claim found last time, doubled:
        # a claim of 50 in a queue of a few jobs takes everybody's.
        cap = getattr(self._local, 'cap', None)
        if cap is not None and self._stagger:
            limit = min(limit, cap)
        if self.max_jobs is not None:
            with self._lock:
                left = self.max_jobs - self._stats['claimed']
            if left <= 0:
                return []
            limit = min(limit, left)
        claimed = []
        tries = 0
        self._local.tries = 0
        try:
            # One claim at a time per process: the threads of a processor
            # would otherwise conflict with each other on the partition and
            # the index leaves they claim from (a third of their claims on
            # a no-op backlog); a claim is short, and its snapshot starts
            # after the previous one committed.
            with self._claimLock:
                claimed, tries = self._claimIn(tm, conn, worker, limit)
        except storageErrors():
            raise
        except TransientError as e:
            # Claims kept conflicting with other workers': let them go on.
            movePartition()
            tries = getattr(e, 'remotetask_tries', self.attempts)
            self._local.tries = tries
            self._count(conflicts=tries)
            time.sleep(random.uniform(0, 0.05))
            return []
        self._local.tries = tries
        self._local.cap = max(1, 2 * len(claimed)) if len(claimed) < limit \
            else 2 * limit
        self._count(conflicts=tries - 1, commits=int(bool(claimed)))
        if claimed and len(claimed) >= limit:
            self._wakeSome(1)   # maybe more: the next idle thread claims
        with self._lock:
            for item in claimed:
                self._active[item.jobid] = item
            self._stats['claimed'] += len(claimed)
        return claimed

    def _claimIn(self, tm, conn, worker, limit):
        """The claim's transaction (retried); returns the claimed
        ``_Active`` items and the number of tries.  A claim that kept
        conflicting raises its TransientError, with ``tries`` on it.
        No poll after its commit: the run (or the next claim) begins its
        own transaction (``quiet.afterCommitUnsynced``)."""
        tries = 0
        try:
            with quiet.afterCommitUnsynced(conn):
                for attempt in tm.attempts(self.attempts):
                    tries += 1
                    if tries > 1:
                        # It conflicted, most likely with another worker's
                        # claim from the same partition: go elsewhere, a
                        # moment later (it may be committing still).
                        movePartition()
                        self._staggered((), tries)
                        time.sleep(random.uniform(0, self._stagger))
                    _claiming.active = True     # until the commit is done
                    version = self._slotsVersion    # before the snapshot
                    with attempt:
                        claimed = self._claimJobs(conn, worker, limit,
                                                  version)
        except TransientError as e:
            e.remotetask_tries = tries
            raise
        finally:
            _claiming.active = False
        return claimed, tries

    def _claimJobs(self, conn, worker, limit, version):
        service = self._service(conn)
        setHome(self._home(service, version))
        now = time.time()
        claimed = []
        for job in service.claim(now=now, worker=worker, limit=limit,
                                 lease=self.lease, spread=True,
                                 tasks=taskNames(), queues=self.queues):
            claimed.append(_Active(
                job.id, service.claimToken(job), job.task,
                _deadline(service, job), now, worker))
        if not claimed:
            # Lanes are made by adds: watch new ones too.
            self._watched = _lengths(service)
        return claimed

    def _home(self, service, version=None):
        """This thread's claim slot ``(slot, total)`` among the threads of
        the live processors of the service (``registry.slots``), or None
        before this processor's first heartbeat: its claims take from
        partitions of their own first (``structures.setHome``), so that
        workers draining one backlog do not take the same entries.
        ``version``: ``_slotsVersion`` before ``service``'s transaction
        began (a registry change seen since then is read again)."""
        now = time.monotonic()
        if now >= self._slotsDue:
            # A stale reading costs overlapping claims, never a job.
            found = registry.slots(service, self.registration.key)
            self._slots = found
            self._slotsDue = now + (SLOTS_REFRESH if found else 0.5)
            if version is not None and version != self._slotsVersion:
                self._slotsDue = 0.0
        slots = self._slots
        index = getattr(self._local, 'index', None)
        if slots is None or index is None:
            return None
        offset, total, oid = slots
        if self._runner == index and self.concurrency > 1:
            # The one thread claiming for the processor (_mayClaim): the
            # processor's share of the partitions, not one thread's.
            c = self.concurrency
            return offset // c, max(1, total // c)
        return offset + index - 1, total

    def _runClaimed(self, tm, conn, worker, claimed, reporter):
        since = time.monotonic()
        try:
            i = 0
            while i < len(claimed):
                if claimed[i].state != CLAIMED:     # handed back meanwhile
                    i += 1
                    continue
                if self._stopping.is_set():
                    self._handBack(claimed[i:], 'the worker stopped before '
                                   'it started the job')
                    return
                if self.batch == 'auto' and i and (
                        time.monotonic() - since > HOLD_SECONDS):
                    self._handBack(claimed[i:], 'claimed ahead, then not '
                                   'started within %gs: left to other '
                                   'workers' % HOLD_SECONDS)
                    return
                ran = 0
                if len(claimed) - i > 1 and _grouped(claimed[i]) and \
                        self._groupable(claimed[i].task):
                    ran = self._runGroup(tm, conn, worker, claimed[i:],
                                         reporter)
                    if ran is None:     # it conflicted: once more
                        ran = self._runGroup(tm, conn, worker, claimed[i:],
                                             reporter)
                if not ran:
                    self._runOne(tm, conn, worker, claimed[i], reporter)
                    ran = 1
                i += ran
        finally:
            self._forget(claimed)

    def _runGroup(self, tm, conn, worker, items, reporter):
        """Run claimed jobs one after the other in ONE transaction, until
        ``GROUP_SECONDS`` have passed, and commit once: each job's task
        writes and outcome still commit together (``service.run`` takes a
        savepoint per job, so a failing task rolls back alone), with one
        commit for several short jobs.  Return how many jobs ran; 0 when
        the group could not commit (a lost claim, the database away), None
        if it conflicted: the caller runs the group again, then its jobs one
        at a time (``_runOne``), so a job of an aborted group may run again,
        as after any conflict.  A job whose task is not ``grouped`` ends
        the group before it, and runs alone (``_runOne``)."""
        started = time.monotonic()
        done = []
        entered = []
        try:
            with tm:
                service = self._service(conn)
                ran = []
                for item in items:
                    if self._stopping.is_set() or ran and (
                            time.monotonic() - started > GROUP_SECONDS
                            or not _grouped(item)):
                        break
                    if not self._groupable(item.task):
                        # Not known to be short: it runs (and commits) on
                        # its own, so that a long job never holds back
                        # the outcomes of the short ones before it.
                        break
                    if not self._begin(item):
                        break       # handed back: the group ends here
                    entered.append(item)
                    log.info('job %s (%s) started by %s', item.jobid,
                             item.task, worker)
                    begun = time.monotonic()
                    cpu = time.thread_time()
                    finish = item.runDeferred(service, reporter, self.around)
                    item.cpu = time.thread_time() - cpu
                    item.ended = time.monotonic()
                    ran.append((item, finish, time.monotonic() - begun))
                # The outcomes after all the tasks (see TaskService.run's
                # ``defer``): one change of the indexes per group, not a
                # savepoint of them per job.
                for item, finish, elapsed in ran:
                    done.append((item, finish(), elapsed))
        except BaseException as e:
            abort(tm)
            self._unbegin(entered)
            if isinstance(e, TransientError):
                self._count(conflicts=1)
                log.debug('%s: a group of %d jobs conflicted: %s', worker,
                          len(done) or 1, errorText(e))
                return None
            elif not isinstance(e, Exception):
                raise
            return 0
        self._count(commits=int(bool(done)))
        for item, outcome, elapsed in done:
            self._record(item, outcome, elapsed)
        return len(done)

    def _begin(self, item):
        """Mark ``item`` running (by its owner thread), unless it was handed
        back; True if so."""
        with self._lock:
            if item.state == HANDED:
                return False
            if item.state == CLAIMED:
                item.state = RUNNING
                item.begun = time.monotonic()
            return True

    def _unbegin(self, items):
        """The group that ran ``items`` was rolled back: they wait again."""
        with self._lock:
            for item in items:
                if item.state == RUNNING:
                    item.state = CLAIMED
                    item.begun = item.ended = None

    def _releaseHeld(self):
        """Hand back the jobs claimed ahead by a thread that has been
        running one job for more than ``HOLD_SECONDS`` (called by the
        clock): they go to the other threads and workers instead of waiting
        behind it."""
        now = time.monotonic()
        with self._lock:
            busy = {i.owner for i in self._active.values()
                    if _busy(i, now, HOLD_SECONDS)}
            held = [i for i in self._active.values()
                    if i.state == CLAIMED and i.owner in busy]
            for item in held:
                item.state = HANDED
        if not held:
            return []
        handed = self._handBack(held, 'claimed ahead, then not started '
                                'within %gs (its thread runs a long job): '
                                'left to other threads and workers'
                                % HOLD_SECONDS)
        with self._lock:
            for item in held:
                if item.jobid not in handed and not item.lost:
                    item.state = CLAIMED    # not handed back: run it later
        if handed:
            self.wake()
        return handed

    def _groupable(self, task):
        """True if the recent jobs of ``task`` took well under a group's
        time (unknown tasks are not)."""
        duration = self._taskDurations.get(task)
        return duration is not None and duration < GROUP_SECONDS / 2

    def _runOne(self, tm, conn, worker, item, reporter):
        if item.state != RUNNING and not self._begin(item):
            return      # handed back (the clock found it waiting too long)
        log.info('job %s (%s) started by %s', item.jobid, item.task, worker)
        started = time.monotonic()
        cpu = time.thread_time()
        failures = 0
        while True:
            try:
                outcome = self._attempts(tm, conn, item, reporter)
                break
            except storageErrors() as e:
                abort(tm)
                health.check(e)         # a full disk: noted (/metrics)
                self._count(storage_errors=1)
                if self._halt.is_set() or item.lost:
                    outcome = 'abandoned (%s)' % e
                    break
                log.warning('job %s: database unavailable (%s); waiting to '
                            'run it again', item.jobid, errorText(e))
                failures += 1
                pause(failures, self._halt)
            except TransientError as e:
                abort(tm)
                outcome = self._giveUp(tm, conn, item, e, (
                    '%s (gave up after %d attempts: it kept conflicting with '
                    'other transactions)' % (errorText(e), self.attempts)),
                    traceback.format_exc())
                break
            except BaseException as e:     # even SystemExit: never die
                abort(tm)
                log.exception('job %s: the run failed outside the task',
                              item.jobid)
                outcome = self._giveUp(tm, conn, item, e, errorText(e),
                                       traceback.format_exc())
                break
        elapsed = time.monotonic() - started
        item.cpu = time.thread_time() - cpu
        item.ended = time.monotonic()
        self._record(item, outcome, elapsed, item.ran)

    def _attempts(self, tm, conn, item, reporter):
        """Run the job in ``tm.attempts()``; return its outcome or LOST.
        Sets ``item.ran``: the wall and CPU seconds of its last attempt's
        run, without the commit (what ``claimSize`` should go by: a group
        of such jobs commits once, and the first job of a processor runs
        alone, its commit and its first loads from a cold cache with it)."""
        tries = 0
        outcome = None
        try:
            for attempt in tm.attempts(self.attempts):
                tries += 1
                with attempt:
                    begun, cpu = time.monotonic(), time.thread_time()
                    outcome = item.run(self._service(conn), reporter,
                                       self.around)
                    item.ran = (time.monotonic() - begun,
                                time.thread_time() - cpu)
        except TransientError:
            self._count(conflicts=tries)
            raise
        self._count(conflicts=tries - 1, commits=1)
        return outcome

    def _giveUp(self, tm, conn, item, exc, error, trace):
        """The failure path: end the job (or retry it per its task's
        ``retry_on``) in a new transaction.  It writes little, but it comes
        after conflicts: retried up to ``GIVE_UP_ATTEMPTS`` times with a
        growing random pause, so that it is not lost in the same crowd."""
        outcome = None
        for tries in range(1, GIVE_UP_ATTEMPTS + 1):
            try:
                with tm:
                    service = self._service(conn)
                    job = item.job(service)
                    if job is None:
                        outcome = LOST
                    else:
                        outcome = service.giveUp(job, error, exc, trace)
                        item.error = job.error
                return outcome
            except TransientError:
                abort(tm)
                self._count(conflicts=1)
                if tries < GIVE_UP_ATTEMPTS:
                    time.sleep(random.uniform(0, 0.005 * tries))
            except Exception:
                abort(tm)
                break
        log.error('job %s: could not record its failure; its lease will '
                  'expire and it will be reaped', item.jobid)
        item.lost = True
        return 'abandoned'

    def _record(self, item, outcome, elapsed, ran=None):
        """Count and log the job's end; ``elapsed``: seconds from its
        start to its end, commit included; ``ran``: (wall, CPU) seconds of
        its run alone, which the claim size goes by (the CPU time of the
        whole, ``item.cpu``, and ``elapsed`` without it)."""
        if outcome == LOST and self._halt.is_set() and item.lost:
            log.warning('job %s (%s) ended %.3fs after it started, once the '
                        'grace period was over and it was handed back: its '
                        'outcome is dropped (it runs again)', item.jobid,
                        item.task, elapsed)
            self._count(lost=1)
            return
        if outcome == LOST:
            why = ('time limit' if item.timedOut else
                   'grace period over' if self._halt.is_set() else
                   'its lease expired or it was ended elsewhere')
            log.warning('job %s (%s) lost after %.3fs: the claim was lost '
                        '(%s); result dropped', item.jobid, item.task,
                        elapsed, why)
            self._count(lost=1)
            return
        if ran is not None:
            self._measured(ran[0], item.task, ran[1])
        else:
            self._measured(elapsed, item.task, item.cpu)
        key = {'completed': 'completed', 'cronjob': 'completed',
               'error': 'failed', 'retry': 'retried'}.get(outcome)
        if key is None:     # abandoned: left for the reaper
            log.warning('job %s (%s) %s after %.3fs', item.jobid, item.task,
                        outcome, elapsed)
            return
        self._count(processed=1, **{key: 1})
        health.STATE.noteCommitted()
        if key == 'completed':
            log.info('job %s (%s) ended %s in %.3fs', item.jobid, item.task,
                     outcome, elapsed)
        else:
            log.warning('job %s (%s) ended %s in %.3fs: %s', item.jobid,
                        item.task, outcome, elapsed, item.error)

    def _handBack(self, items, reason):
        """Hand the jobs back to the queue in a transaction of our own."""
        handed = []
        if not items:
            return handed
        tm = transaction.TransactionManager()
        try:
            conn = self.db.open(tm)
        except Exception:
            log.exception('could not hand back jobs %s',
                          [i.jobid for i in items])
            return handed
        try:
            # Other workers' claims and groups conflict with it most under
            # load; jobs not handed back wait for their leases to expire.
            for attempt in tm.attempts(GIVE_UP_ATTEMPTS):
                with attempt:
                    handed = []
                    service = self._service(conn)
                    for item in items:
                        job = item.job(service)
                        if job is not None:
                            service.handBack(job, reason=reason,
                                             ran=item.begun is not None)
                            handed.append(item.jobid)
            for item in items:
                item.lost = True
            self._count(handed_back=len(handed))
            for jobid in handed:
                log.warning('job %s handed back: %s', jobid, reason)
        except Exception:
            log.exception('could not hand back jobs %s; their leases will '
                          'expire', [i.jobid for i in items])
        finally:
            abort(tm)
            close(conn)
        return handed


class _Reporter:
    """Progress of a worker thread's jobs, committed through a connection
    and transaction manager of its own so others see it at once and it
    never conflicts with the job's completion (it writes only the job's
    progress object)."""

    def __init__(self, processor):
        self.processor = processor
        self.tm = transaction.TransactionManager()
        self.conn = None

    def report(self, jobid, fraction, message):
        try:
            if self.conn is None:
                self.conn = self.processor.db.open(self.tm)
            for attempt in self.tm.attempts(3):
                with attempt:
                    service = self.processor._service(self.conn)
                    job = service.jobs.get(jobid)
                    if job is not None:
                        job.setProgress(fraction, message)
        except ValueError:
            raise
        except Exception as e:
            abort(self.tm)
            log.warning('job %s: progress not recorded: %s', jobid,
                        errorText(e))

    def close(self):
        abort(self.tm)
        if self.conn is not None:
            close(self.conn)
            self.conn = None


# -- processors of stored services (ITaskService.startProcessing...) ----------

_registry = {}
_registryLock = threading.Lock()


def _key(service):
    jar = getattr(service, '_p_jar', None)
    if jar is None or service._p_oid is None:
        raise ServiceNotStoredError(
            '%r is not stored in a database: add it to a ZODB connection '
            '(e.g. root["tasks"] = service) and commit before starting '
            'processing' % (service,))
    return jar.db(), service._p_oid


def startProcessing(service, **options):
    """Start a processor for ``service`` in this process and return it.

    The service must be stored in a database and committed.  If a processor
    already runs it in this process, that one is returned.
    :raises ServiceNotStoredError: if it is not.
    """
    db, oid = _key(service)
    with _registryLock:
        processor = _registry.get((db, oid))
        if processor is not None and processor.running:
            return processor
        processor = Processor(db, service, **options)
        processor.start()
        _registry[(db, oid)] = processor
    return processor


def stopProcessing(service, timeout=None):
    """Stop the processor of ``service`` in this process (see
    ``Processor.stop``); return False if none ran."""
    try:
        key = _key(service)
    except ServiceNotStoredError:
        return False
    with _registryLock:
        processor = _registry.pop(key, None)
    if processor is None:
        return False
    processor.stop(timeout)
    return True


def isProcessing(service):
    """True while a processor of this process runs ``service``."""
    try:
        key = _key(service)
    except ServiceNotStoredError:
        return False
    processor = _registry.get(key)
    return processor is not None and processor.running


def _weight(seen):
    """The weight of the ``seen``-th measure in a moving average
    (``Processor._measured``): the second replaces the first."""
    return 1.0 if seen <= 2 else MEASURE_WEIGHT


def _busy(item, now, seconds):
    """True if ``item``'s task has been running for more than ``seconds``
    (not: it ran, and waits for its group to commit)."""
    return item.state == RUNNING and item.ended is None \
        and now - item.begun > seconds


def _grouped(item):
    """False for a job whose task asks to run alone, committed as soon as
    it ends (``ITask.grouped``; see "Grouped commits" in interfaces)."""
    task = zope.component.queryUtility(interfaces.ITask, name=item.task)
    return getattr(task, 'grouped', True) is not False


def taskNames():
    """The names of the tasks registered in this process: a processor
    claims only jobs it can run, leaving the others to workers that can."""
    return frozenset(name for name, task in
                     zope.component.getUtilitiesFor(interfaces.ITask))


def _lengths(service):
    """The oids of the lengths of the service's lanes (routing.py)."""
    return frozenset(counter._p_oid
                     for key, lane in routing.lanes(service)
                     for counter in lane.counters()
                     if counter._p_oid is not None)

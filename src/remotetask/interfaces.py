"""The remotetask specification.

This module is the contract of the package: the statuses a job goes through,
the one exception tree, and the interfaces of tasks, jobs, the task service
and processors.  The implementations (``task.py``, ``job.py``,
``service.py``, ``processor.py``) point back here.

Jobs and statuses
=================

A *job* is one request to run a *task* (a named ``ITask`` utility) with an
*input*.  It goes through these statuses, declared once below:

``start later``  added with ``startLater=True``; waits for ``startJob()``.
``deferred``     added with ``after=(jobid, ...)`` (or by ``chain()`` and
                 ``group()``): waits for those jobs (its *parents*) to
                 complete, then is queued in the transaction that completes
                 the last of them; cancelled if one of them fails or is
                 cancelled (see ``remotetask.workflows``).
``queued``       waiting for a worker; due now.
``delayed``      waiting for a worker; due at ``job.eta`` (a delay, an ETA,
                 a retry with back-off, or lovely's one-off cron job
                 ``addCronJob(delay=...)``).  It stays ``delayed`` until a
                 worker takes it, which happens as soon as it is due.
``cronjob``      a repeating job waiting for its next call time.  A cron job
                 never becomes final by running: after each run it goes back
                 to ``cronjob`` and keeps the last result or error.
``processing``   claimed by a worker which holds a lease on it.
``completed``    final: the task returned; ``job.output`` is its result.
``error``        final: the task failed; ``job.error`` says why.
``cancelled``    final: cancelled before it ran.

A job is in the queue exactly while its status is one of ``WAITING_STATUSES``.

Transactions and concurrency
============================

All the state lives in persistent objects, so every method of the service
runs inside the caller's ``transaction``: a job added by a request is
committed together with the application data of that request, or not at
all.  The service never commits by itself; processors (``IProcessor``) and
the command line do, each in short transactions of their own:

1. *Claim*: one short transaction takes one or more due jobs out of the
   queue, marks them ``processing`` with the worker's id, a lease expiry and
   a start count, and commits.  Two workers cannot both commit the claim of
   one job: the second gets a ``ConflictError`` and retries.

2. *Run*: a second transaction runs the task and records the outcome on the
   job; the task's own ZODB writes and the job's completion commit together.
   The processor runs it in ``transaction.manager.attempts()``, so a
   ``ConflictError`` (any ``TransientError``) raised by the task or at commit
   runs the task again, a bounded number of times, with the job back in the
   state it had after the claim.

What a task may assume:

- it runs in a transaction that is not yet committed; everything it writes to
  the ZODB is committed only if it returns normally (or raises ``Retry``,
  ``TaskError`` or another exception: then its writes are rolled back and
  only the job's bookkeeping is committed);
- it may be run more than once for the same job: after a conflict, after its
  worker died (lease expired), or by a retry policy.  Tasks should be
  idempotent or check what they already did;
- it may commit or abort the transaction itself: the job's bookkeeping is
  written after the task returns, in whatever transaction is then current;
  but it then gives up the guarantee above for what it committed;
- ``remotetask.job.currentJob()`` gives its ``ITaskContext`` (job id,
  service, progress reporting, cancellation flag).

How a processor (``remotetask.processor``) carries this out:

- each worker thread has its own connection and its own transaction
  manager (the thread's ``transaction.manager``), so ``transaction.get()``,
  ``transaction.savepoint()``, ``transaction.commit()`` and
  ``transaction.abort()`` in a task act on the job's transaction;
- the run re-reads the job in each attempt and checks with
  ``ITaskService.owns()`` that the claim still holds.  If the job was
  handed back, reaped or ended meanwhile, the attempt is aborted and the
  result dropped (``LeaseLost``); ``ITaskService.run()`` checks this again
  after the task returns, so a task that committed or aborted cannot have an
  outcome written over another worker's claim.  A claim lost while the task
  ran shows as a ``ConflictError`` at commit (the job was written by the
  other transaction), and the next attempt finds it lost;
- when the attempts are used up (default 5) the job is not run again at
  once: a new transaction queues it again with the task's back-off, as one
  of its retries (the job did nothing wrong; the database was busy, or
  recovering from an outage), and once its ``max_retries`` are used up
  ends it ``error`` with a message saying it kept conflicting
  (``ITaskService.giveUp()``).  No job loops forever;
- a clock thread with a connection of its own renews the lease of each
  running job (about every third of the lease) by writing only the job's
  small lease object, so renewals never conflict with the job's end.  When
  a job goes over its time limit the clock ends it through ``reap()``
  (``error``, or a retry if the task's ``retry_on`` names
  ``TimeLimitExceeded``), then sets the task's ``cancelled`` flag; what the
  task returns is dropped.  A task that never looks at ``cancelled`` keeps
  its thread busy until it returns: Python threads can not be killed;
- progress reports are committed at once through another connection of the
  worker thread, writing only the job's progress object (a fresh one per
  start), so others see them while the task runs and they never conflict
  with the job's completion;
- the clock calls ``maintain()`` every ``maintenance_interval`` seconds in a
  transaction of its own; a conflict there is retried at the next tick;
- ``StorageError`` (ZEO's ``ClientDisconnected``...), ``StorageUnavailable``
  and ``OSError`` never stop a processor: it waits, backing off, and tries
  again; a job it was running is run again once the storage is back (while
  the claim still holds).

Grouped commits: the crash window
---------------------------------

With ``batch='auto'`` (the default) a processor thread claims several
short jobs at once and runs them one after the other in ONE transaction
that commits once ``GROUP_SECONDS`` (0.2 s) have passed (or the claimed
jobs are done).  If its process is killed outright, every job of the open
group is run again (after the lease), not only the one that was running;
the jobs it claimed and had not started yet run once, after the lease.
A group never goes beyond the claim it comes from, so per thread a kill
re-runs at most the smaller of:

- the jobs of one claim: ``batch`` when it is a number; with ``'auto'``
  ``AUTO_SECONDS / d`` (0.1 s of work, d being the average duration of
  the processor's recent jobs, all tasks together), at least 1 and at
  most ``AUTO_MAX`` (50);
- the jobs that start within ``GROUP_SECONDS``: ``GROUP_SECONDS / t + 1``
  for a task whose runs take t or more.

For the process, ``threads x`` that: a worker running a 20 ms task (d = t =
20 ms) claims 5 jobs at a time, so a kill re-runs at most 10 jobs with 2
threads (measured with 3 workers of 2 threads, one killed: 3 to 8 jobs in
10 runs, 4 to 7 in issue 17's 3 runs; a 5 ms task, bound 40: 0 to 13 in 5
runs; ``bench/crashwindow.py``, bench/RESULTS.md).  A worker whose recent
jobs mostly took 1 ms claims up to 50 at a time: its 20 ms jobs then re-run
up to 11 per thread.  Their ZODB writes were never committed, so for a task
whose effects are all in the ZODB this costs only time; a task that sends
mail sends it again.  Such a task sets ``grouped = False``
(``SimpleTask(func, grouped=False)``, ``grouped="false"`` in ZCML): each of
its jobs runs in a transaction of its own, committed as soon as it ends,
while the processor keeps grouping the other tasks' jobs; a kill then
re-runs at most the jobs that were running, one per thread (measured: 1 to
2 in 10 runs).  Apart from a kill, any job whose transaction conflicts runs
again at once, grouped or not (see "Run" above); a conflicting group runs
again as a whole.

A worker process killed outright (SIGKILL, power loss) leaves its jobs
``processing`` with a lease nobody renews; any processor's ``reap()`` queues
them again once the lease has expired (the start count grows), or ends them
``error`` when they reached their ``max_starts``.  Only such jobs, and those
of a worker cut off from the database for longer than its lease, can have
their task run twice under two claims; and since an outcome is written
only while its claim holds, only one of those runs commits its outcome and
its writes (apart from what a task committed itself).

Time: ``now``
=============

Every ``now`` is epoch seconds.  A method given no ``now`` (None) uses the
clock, ``time.time()``; a method given one uses that instead, so a caller can
drive the service with a clock of its own, as lovely.remotetask's doctests
do (``process(0)``, ``process(10 * 60)``).  What a given ``now`` does:

- ``add()``, ``addCronJob()``, ``reschedule()``, ``startJob()``,
  ``retry()``: the job is scheduled from it: a delay counts from it, a cron
  job's next call is the first one after it.
- ``claim()``, ``run()``, ``reap()``, ``maintain()`` (what processors call,
  always with the real time): it is the time of the claim, of the run's end
  (a cron job's next call is computed from it), of the lease check.  A job
  is due for ``claim(now)`` when its ``eta`` is at or before ``now``.
- lovely's processing calls, ``process(now)``, ``processNext(now)``,
  ``claimNextJob(now)`` and ``hasJobsWaiting(now)``, read an explicit
  ``now`` as lovely did:

  * a cron job (or lovely's one-off delayed job, ``addCronJob(delay=...)``)
    added or rescheduled *without* a ``now`` is scheduled from the clock at
    once (``job.eta``, which processors and the web page use), but
    provisionally: the first of these calls given a ``now`` schedules it
    again from that ``now`` (``job.timeOfNextCall(now)``), so it is never
    due in that call, and runs at the first call whose ``now`` reaches its
    next call time.  A job that ran, or was rescheduled with a ``now``,
    since it was added keeps its time;
  * a ``queued`` job is due whatever ``now`` is (lovely's queue was not
    time-based); only ``delayed`` and ``cronjob`` jobs wait for their
    ``eta``.  These calls move the queue entry of a queued job queued
    after their ``now`` to ``now`` when nothing else is due (up to 100 of
    them per call among the 1,000 oldest queued jobs, ``scheduling.SCAN``),
    then claim with ``claim(now)``: queue pauses, priorities and limits
    apply as for processors.

  Without a ``now`` they use the clock and change no schedule: a queued
  job's ``eta`` (the time it was queued) has passed, and cron expressions,
  time zones and ETAs mean what they say.  ``add(delay=...)`` and
  ``add(eta=...)`` are remotetask's, not lovely's: without a ``now`` their
  due time comes from the clock and stays.  A real-time caller should pass
  no ``now`` to lovely's calls (processors' clock threads pass none to
  ``hasJobsWaiting``).

Structures
==========

No structure is rewritten in full on an add or a claim: jobs are kept in a
64-bit BTree, the queue in several ordered tree sets keyed by
``(eta, job id)``, per-status tree sets index the jobs by status and
``BTrees.Length`` counters (which resolve their own conflicts) count them.
Job ids come from per-process blocks, so concurrent producers do not all
write one counter.  ``docs/design.md`` explains the trade-offs.
"""
import transaction.interfaces
import zope.interface
from zope.interface.common.mapping import IEnumerableMapping

# -- Statuses --------------------------------------------------------------

STARTLATER = 'start later'
DEFERRED = 'deferred'
QUEUED = 'queued'
DELAYED = 'delayed'
CRONJOB = 'cronjob'
PROCESSING = 'processing'
COMPLETED = 'completed'
ERROR = 'error'
CANCELLED = 'cancelled'

#: Every status, in the order a job goes through them.
STATUSES = (STARTLATER, DEFERRED, QUEUED, DELAYED, CRONJOB, PROCESSING,
            COMPLETED, ERROR, CANCELLED)
#: A job in one of these statuses is in the queue.
WAITING_STATUSES = (QUEUED, DELAYED, CRONJOB)
#: A job in one of these statuses will never run again unless retried.
FINAL_STATUSES = (COMPLETED, ERROR, CANCELLED)
#: What ``clean()`` removes when not told otherwise.
CLEANABLE_STATUSES = FINAL_STATUSES


# -- Exceptions -------------------------------------------------------------

class RemoteTaskError(Exception):
    """The root of every error remotetask raises on purpose."""


class UnknownTaskError(RemoteTaskError, ValueError):
    """No ``ITask`` utility is registered under the name asked for, and no
    live worker of the service (see ``ITaskService.workers``) runs it.

    Raised by ``add()`` and ``addCronJob()``; nothing is stored.
    """


class JobNotFoundError(RemoteTaskError, KeyError):
    """No job has the id asked for (it never existed or was cleaned)."""

    def __str__(self):
        return str(self.args[0]) if self.args else 'job not found'


class InvalidInputError(RemoteTaskError, ValueError):
    """The input of a job can not be stored (it can not be pickled)."""


class InvalidStatusError(RemoteTaskError, ValueError):
    """The job is not in a status that allows what was asked.

    For example cancelling a completed job, starting a job that was not
    added with ``startLater``, or cleaning a status that is not final.
    """


class InvalidScheduleError(RemoteTaskError, ValueError):
    """A cron schedule can not be understood (bad field, expression or
    time zone)."""


class TaskError(RemoteTaskError):
    """Raised by a task to fail its job with a clean message.

    The job ends ``error`` with ``str(exception)`` as its error and no
    traceback (the message is meant for users).  A retry policy does not
    retry it: it means "this input can not be done".
    """


class Retry(RemoteTaskError):
    """Raised by a task to ask to be run again later.

    ``delay`` is in seconds (None: the task's back-off policy decides).
    Counts as one of the job's retries: when ``max_retries`` is reached the
    job ends ``error``.
    """

    def __init__(self, message='', delay=None):
        super().__init__(message)
        self.message = message
        self.delay = delay


class TimeLimitExceeded(TaskError):
    """A job ran longer than its time limit."""


class LeaseLost(RemoteTaskError, transaction.interfaces.TransientError):
    """A worker no longer owns the job it ran: its lease expired and the job
    was handed to another worker or ended.  The worker drops its result."""


class ConfigurationError(RemoteTaskError, ValueError):
    """A database URI or a service name can not be used (also
    ``remotetask.db.ConfigurationError``)."""


class ServiceNotStoredError(RemoteTaskError, ValueError):
    """Processing was asked for a service that is not stored in a database
    (no ``_p_jar``), or not committed yet: a processor opens connections of
    its own and must find the service there."""


class DiskFullError(RemoteTaskError):
    """The disk of the database is full (``ENOSPC``): what was being
    committed was not stored; what was committed before is safe.  Not
    transient for the caller (retrying at once does not help); processors
    wait for space and go on by themselves.  See ``remotetask.health``.
    """


class StorageUnavailable(RemoteTaskError,
                         transaction.interfaces.TransientError):
    """The database can not be reached (a ZEO server or PostgreSQL is down).

    Transient: workers wait and retry.
    """


# -- Interfaces -------------------------------------------------------------

class ITask(zope.interface.Interface):
    """A task: something a job runs.  Registered as a named utility.

    The registration name is the task's name in ``service.add(name, ...)``.
    """

    time_limit = zope.interface.Attribute(
        'Seconds a job of this task may run before it is ended as "error" '
        '(None: no limit).  A job may override it.')
    max_starts = zope.interface.Attribute(
        'How many times a job may be started (first run plus restarts after '
        'its worker died) before it ends "error".')
    max_retries = zope.interface.Attribute(
        'How many times a job may be retried: after raising ``Retry``, or '
        'after raising one of ``retry_on``.')
    retry_on = zope.interface.Attribute(
        'Tuple of exception classes after which a job is retried (with '
        'back-off) rather than failed.  Empty by default: failures are '
        'final unless the task says otherwise.')
    retry_backoff = zope.interface.Attribute(
        'The first retry delay in seconds; each retry doubles it.')
    retry_backoff_max = zope.interface.Attribute(
        'The largest retry delay in seconds.')
    retry_jitter = zope.interface.Attribute(
        'If true, each retry delay is drawn uniformly between half of it and '
        'all of it, so failed jobs do not all come back at once.')
    concurrency = zope.interface.Attribute(
        'None, or N: at most N jobs of this task processing at once, across '
        'all workers and hosts; the others stay queued (a claim takes one of '
        'N slots in its own transaction).')
    rate_limit = zope.interface.Attribute(
        "None, or 'N/s', 'N/m', 'N/h': at most N starts of this task per "
        'second, minute or hour, across all workers.')
    keep = zope.interface.Attribute(
        'None (the service\'s ``retention`` applies), or seconds its jobs '
        'are kept once final, in every final status (``math.inf``: for '
        'ever).  See ``remotetask.retention``.')
    grouped = zope.interface.Attribute(
        'True (the default): a processor may run its jobs in a group '
        'that commits once (see "Grouped commits" above).  False: each of '
        'its jobs runs in a transaction of its own, committed as soon as it '
        'ends, so a worker killed outright re-runs at most the jobs it was '
        'running.  For tasks with effects outside the ZODB (mail...).')

    def __call__(service, jobid, input):
        """Run the task for job ``jobid`` of ``service`` and return the result.

        The result is stored on the job, so it must be picklable.
        :raises TaskError: to fail the job with a message.
        :raises Retry: to be run again later.
        """


class IJob(zope.interface.Interface):
    """One request to run a task.

    A job is a persistent object of its service; any connection may read
    it.  Its status changes only through the service, in a transaction that
    also updates the queue and the indexes, so two transactions that change
    one job's status conflict and only one commits.  Its lease and its
    progress are small persistent objects of their own: a worker renewing
    the lease, or a task reporting progress, from another connection never
    conflicts with the transaction that ends the job.
    """

    # Plain attributes, not zope.schema fields: zope.schema would be
    # imported by every command and worker for these three declarations
    # alone (about 20 ms of their start-up); nothing validates through them.
    id = zope.interface.Attribute('Job id (an int; read-only)')
    task = zope.interface.Attribute('Name of the task to run (a str)')
    input = zope.interface.Attribute('The input given to the task')
    output = zope.interface.Attribute('The result of the last run, or None')
    error = zope.interface.Attribute(
        'Text saying why the job failed (last run), or None')
    traceback = zope.interface.Attribute(
        'The text of the traceback of the last unexpected exception, or None')
    status = zope.interface.Attribute(
        'Status, one of STATUSES; changed only by the service, never set '
        'directly (read-only)')
    created = zope.interface.Attribute('Epoch seconds when added')
    started = zope.interface.Attribute(
        'Epoch seconds of the last start: its claim while it waits to run '
        'or runs, its run\'s start once the run has ended')
    completed = zope.interface.Attribute('Epoch seconds of the last end')
    eta = zope.interface.Attribute(
        'Epoch seconds when the job is due (while waiting), else None')
    worker = zope.interface.Attribute('Id of the worker that ran it last')
    starts = zope.interface.Attribute('How many times it was started')
    retries = zope.interface.Attribute('How many times it was retried')
    max_starts = zope.interface.Attribute('Override of ITask.max_starts')
    max_retries = zope.interface.Attribute('Override of ITask.max_retries')
    time_limit = zope.interface.Attribute('Override of ITask.time_limit')
    lease_expires = zope.interface.Attribute(
        'While processing: epoch seconds when the lease ends')
    attempts = zope.interface.Attribute(
        'Tuple of dicts, one per start: start, end, worker, outcome, error; '
        'bounded: the first 2 and the last 8 attempts are kept '
        '(remotetask.limits), ``attempt_count`` counts them all')
    attempt_count = zope.interface.Attribute(
        'How many attempts (starts) the job had in all')
    progress = zope.interface.Attribute(
        '(fraction or None, message) last reported by the running task')
    meta = zope.interface.Attribute(
        'A dict of application data (the tracker keeps its records here). '
        'Replace it rather than change it in place: '
        '``job.meta = dict(job.meta, key=value)``')

    def setProgress(fraction=None, message='', now=None):
        """Record progress on the job's own small progress object (see
        ``ITaskContext.progress``: a running task reports through its
        context, which a processor commits at once).

        :raises ValueError: if ``fraction`` is not between 0 and 1.
        """

    def info():
        """A dict describing the job, for the command line and the web
        service (id, task, status, times, worker, starts, retries, error,
        progress, cron and, for cron jobs, the schedule)."""


class ICronJob(IJob):
    """A job that runs again and again on a schedule.

    The schedule is either lovely's tuple fields (all in UTC; an empty tuple
    means "any"; a time matches when it matches every non-empty field; day of
    week 0 is Monday), or ``interval`` (run every ``interval`` seconds), or a
    standard five-field cron ``expression`` read in ``timezone``.  Or it is
    lovely's ``delay``: the job runs once, ``delay`` seconds after it was
    scheduled (status ``delayed``), and then ends ``completed`` or ``error``
    like a plain job; ``service.reschedule()`` arms it again.
    """

    minute = zope.interface.Attribute('Tuple of minutes (0-59)')
    hour = zope.interface.Attribute('Tuple of hours (0-23)')
    dayOfMonth = zope.interface.Attribute('Tuple of days of month (1-31)')
    month = zope.interface.Attribute('Tuple of months (1-12)')
    dayOfWeek = zope.interface.Attribute('Tuple of week days (0=Monday)')
    delay = zope.interface.Attribute(
        'Seconds before its one call (lovely\'s delayed job), or None')
    interval = zope.interface.Attribute('Seconds between calls, or None')
    expression = zope.interface.Attribute('A cron expression, or None')
    timezone = zope.interface.Attribute('Time zone name of the expression')

    def update(minute=(), hour=(), dayOfMonth=(), month=(), dayOfWeek=(),
               delay=None, expression=None, timezone=None, interval=None):
        """Replace the schedule.  Call ``service.reschedule(id)`` after.

        Fields that are not given are emptied (as in lovely).  A ``delay``
        of 0 means no delay (as in lovely); ``delay`` or ``interval``,
        when given with tuple fields, wins over them.

        :raises InvalidScheduleError: if the new schedule is malformed (a
            field that is not a sequence of integers in its range, a delay
            or interval that is not a positive number of seconds, both a
            delay and an interval, a bad expression or time zone, an
            expression with fields, a delay or an interval) or never
            matches a date (February 30th); the job then keeps the schedule
            it had.
        """

    def repeats():
        """False for lovely's one-off delayed job (a ``delay``), else
        True."""

    def timeOfNextCall(now=None):
        """Epoch seconds of the next call strictly after ``now`` (None: the
        clock): ``now + delay``, ``now + interval``, or the first time after
        ``now`` that matches the fields or the expression.  The tuple fields
        are cron's: the finest field given sets the period, whole minutes
        (lovely added its period to ``now``, so its call times kept the
        seconds of ``now``; they are the same whenever ``now`` is on a
        whole period, as in its documentation).

        :raises InvalidScheduleError: if the schedule never matches a date
            (``update()`` refuses such schedules, so only for old pickles).
        """

    def schedule():
        """The schedule as the keyword arguments of ``update()``."""


class ITaskContext(zope.interface.Interface):
    """What a running task can know about its job
    (``remotetask.job.currentJob()``)."""

    jobid = zope.interface.Attribute('The id of the running job')
    service = zope.interface.Attribute('The service the job belongs to')
    cancelled = zope.interface.Attribute(
        'True once the worker wants the task to stop (time limit, shutdown)')

    def progress(fraction=None, message=''):
        """Report progress: a fraction between 0 and 1 (or None) and a
        message.  Others see it while the task runs; it never conflicts
        with the job's completion."""

    parents = zope.interface.Attribute(
        'The ids of the jobs this one was added after (a tuple, empty for '
        'a job added without ``after``), in the order given')

    def parentResults():
        """The results of the parents, a list in the order of ``parents``.

        :raises JobNotFoundError: if a parent was deleted meanwhile.
        """


class ITaskService(zope.interface.Interface):
    """A persistent service that keeps jobs and a queue of them.

    Every method runs in the caller's transaction and commits nothing.
    Unless said otherwise, methods taking a ``jobid`` raise
    ``JobNotFoundError`` (a ``KeyError``) naming the id when there is no
    such job.  ``now`` is epoch seconds; None means the current time (see
    "Time" in the module documentation for what a given one does).
    """

    jobs = zope.interface.Attribute(
        'Job ids to jobs: a mapping with the reading API of an LOBTree, in '
        'id order (one BTree per producers\' lane, read as one: '
        'structures.JobTree)')

    def getAvailableTasks():
        """Return a dict of the registered task names to tasks."""

    def add(task, input=None, startLater=False, delay=None, eta=None,
            time_limit=None, max_retries=None, max_starts=None, meta=None,
            now=None, queue='default', priority=0, unique_key=None,
            after=None):
        """Add a job running ``task`` with ``input``; return its id.

        The job is ``queued``; ``delayed`` if ``delay`` (seconds) or ``eta``
        (epoch seconds) puts it in the future; ``start later`` if
        ``startLater``: it then waits for ``startJob()``.

        ``after`` (a job id or a sequence of them, its *parents*): the job
        is ``deferred`` until every parent has completed, then queued in
        the transaction that completes the last one (at once if they all
        completed already).  If a parent ends ``error`` or ``cancelled``
        (or is deleted) the job is cancelled with an error naming it, and
        so are the jobs waiting for this one.  The task reads the parents'
        results with ``currentJob().parentResults()``.  See
        ``remotetask.workflows`` for the rules of cancel, retry and delete.
        ``after`` can not be combined with ``startLater``, ``delay`` or
        ``eta`` (InvalidInputError), names existing jobs only (not cron
        jobs, which never complete: InvalidInputError), so cycles can not
        be made.

        ``queue``: the name of the queue it waits in (workers may take from
        some queues only).  ``priority``: an integer between -1000 and 1000;
        among the due jobs a worker may take, higher priorities first.
        ``unique_key``: a string; while a job added with the same key is
        waiting, start later or processing, nothing is added and that job's
        id is returned (decided in this transaction: two transactions adding
        the same key conflict, and the one retried finds the other's job).

        :raises UnknownTaskError: if no task has that name (nothing stored).
        :raises InvalidInputError: if the input (or ``meta``) can not be
            pickled; if ``eta`` or ``delay`` is not a finite number or
            puts the job past the year 9999 (``limits.HORIZON``), or
            ``time_limit`` is NaN (all are ValueErrors).
        :raises ValueError: if both ``delay`` and ``eta`` are given;
            ``InvalidInputError`` (a ValueError)
            for a queue that is not a name, a priority that is not an
            integer in range, a unique key that is not a string.
        """

    def chain(steps, after=None, now=None):
        """Add a job per step, each waiting for the one before; return
        their ids.

        ``steps`` is a non-empty sequence of ``(task, input)`` pairs.  A
        step whose input is None gets the previous step's result as its
        input when it is released; the first step waits for ``after`` (as
        in ``add()``).  Everything is checked before anything is added.

        :raises InvalidInputError: for an empty sequence, a step that is not
            a pair, an input that can not be stored, a bad ``after``.
        :raises UnknownTaskError: for an unknown task in any step (nothing
            is added).
        """

    def group(steps, then=None, after=None, now=None):
        """Add a job per step (all waiting for ``after``, if given) and,
        if ``then`` (a ``(task, input)`` pair) is given, a job waiting for
        all of them; return ``(ids, thenId)`` (``thenId`` is None without
        ``then``).

        The ``then`` job is queued once, in the transaction that completes
        the last job of the group; when its input is None it gets the list
        of the group's results, in the order of ``steps``.  If a job of the
        group fails or is cancelled, the ``then`` job is cancelled.

        :raises InvalidInputError, UnknownTaskError: as ``chain()``.
        """

    def addCronJob(task, input=None, minute=(), hour=(), dayOfMonth=(),
                   month=(), dayOfWeek=(), delay=None, expression=None,
                   timezone=None, now=None, queue='default', priority=0,
                   interval=None):
        """Add a cron job; return its id.  See ``ICronJob``.  Each of
        its runs waits in ``queue`` with ``priority`` (see ``add``).

        It waits as ``cronjob`` until ``job.timeOfNextCall(now)``; with a
        ``delay`` it is lovely's one-off ``delayed`` job, due ``delay``
        seconds after ``now``.  Without a ``now``, see "Time" in the module
        documentation: lovely's processing calls given a ``now`` schedule
        it again from theirs.

        :raises UnknownTaskError, InvalidInputError, InvalidScheduleError:
            the latter also for a schedule that repeats more often than
            once a second (``delay`` < 1; runaway protection).
        """

    def startJob(jobid, now=None):
        """Queue a ``start later`` job (``delayed`` if it was added with a
        delay or an ETA still to come) and return True; return False, and
        change nothing, if the job is not ``start later`` (lovely's
        answer).
        """

    def reschedule(jobid, now=None):
        """Put a cron job back in the queue at its next call time after
        ``now`` (after ``job.update()``, to revive a cancelled one, or to
        arm a one-off delayed one again): ``cronjob``, or ``delayed`` for a
        ``delay``.  Without a ``now`` the time is provisional, as for
        ``addCronJob`` (see "Time").

        :raises InvalidStatusError: if the job is not a cron job or is
            queued, processing or start later.
        """

    def cancel(jobid, now=None):
        """Cancel a job.

        A waiting job (deferred, queued, delayed, cron or start later) is
        cancelled at once; jobs deferred after it are cancelled too, with an
        error naming it (``remotetask.workflows``).  A processing job is asked to stop: a flag on its run's
        small progress object (so the request never conflicts with the
        run's end); its processor sees it within a tick and makes the
        task's ``ITaskContext.cancelled`` true; when the run returns
        (whatever its outcome) or its time limit ends it, the job ends
        ``cancelled``, and a cron job is not scheduled again.  A request
        that commits after the run's end was read is honoured by the next
        claim of the job (a cron job then ends ``cancelled`` unrun).  The
        JSON API answers 202 for it, 200 for a waiting job.

        :raises InvalidStatusError: if the job is final.
        """

    def retry(jobid, now=None):
        """Queue again a job that ended ``error`` or ``cancelled``.

        Jobs that were cancelled because this one failed wait for it again
        (``deferred``).  A job with parents goes back to ``deferred`` if some
        of them have not completed yet.

        :raises InvalidStatusError: for any other status, or for a job one
            of whose parents is in ``error`` or ``cancelled`` or was deleted
            (retry that parent instead).
        """

    def delete(jobid):
        """Remove a job that is not processing.  Jobs deferred after it
        are cancelled, with an error naming it.

        :raises InvalidStatusError: if the job is processing.
        """

    def clean(status=CLEANABLE_STATUSES, before=None):
        """Remove the jobs in the given final statuses (ended before the
        epoch time ``before``, if given), except those that jobs not final
        yet were added after (``remotetask.workflows.awaited()``).  One
        transaction, however many jobs: for many jobs use
        ``remotetask.retention.clean`` in bounded steps (``limit``,
        ``scan`` and ``cursors``), one transaction each, as
        ``remotetask clean`` and ``POST /api/clean`` do.

        :raises InvalidStatusError: if a status is not final.
        """

    retention = zope.interface.Attribute(
        'A mutable mapping of the final statuses to the seconds a job is '
        'kept once it ended (None: for ever); defaults: a day for '
        'completed and cancelled jobs, a week for errors.  Setting a value '
        'that is not None or a number >= 0 raises InvalidInputError and '
        'changes nothing.  Processors remove expired jobs in small '
        'transactions of their own (``remotetask.retention``).')

    def getStatus(jobid):
        """The status of the job."""

    def getResult(jobid):
        """The result (output) of the job, or None."""

    def getError(jobid):
        """The error text of the job, or None."""

    def count(status=None):
        """The number of jobs in ``status`` (all jobs if None), without
        scanning them."""

    def counts():
        """A dict of every status to its number of jobs."""

    def upgradeLayout():
        """Bring a service stored by an older version to the current layout
        of its structures (partitioned by producers' lanes), in the current
        transaction; nothing if it is current (a cheap check, made by
        ``remotetask.root.findService``)."""

    def taskNames():
        """The names of the tasks that jobs were added for, sorted (the
        keys of the task index behind ``jobIds(task=...)``; a name stays
        when its jobs are removed)."""

    def workers(now=None):
        """The live workers (processors) of this service, from the worker
        registry (``remotetask.registry``): a list of dicts with ``id``,
        ``host``, ``pid``, ``kind``, ``version``, ``started``,
        ``heartbeat``, ``interval``, ``expires``, ``concurrency``, ``tasks``
        (the names it runs), ``running`` (job ids), ``done`` and
        ``failed``, sorted by id.  A processor records itself when it
        starts, beats every few seconds, and removes its entry when it stops;
        the entry of one that died expires after a few missed heartbeats.
        ``add()`` also accepts the tasks these workers run."""

    def jobIds(status=None, task=None):
        """The ids of the jobs in ``status`` and of ``task`` (either may be
        None: any), ascending, from indexes: a set with the reading API of
        a BTrees set (``in``, ``len``, ``keys(min, max)``, ``minKey``,
        ``maxKey``), whose ranges page through them without loading jobs
        (the index's partitions merged lazily: ``structures.IdSet``); both
        given, a BTrees ``LOSet``.  ``structures.intersect`` intersects
        them with other sets of ids.

        :raises ValueError: for an unknown status.
        """

    def hasJobsWaiting(now=None):
        """True if a job is due at ``now``.  With an explicit ``now``,
        lovely's rules (see "Time"): provisional cron jobs are scheduled
        from it first, and a ``queued`` job counts whatever its queue time
        (unless its queue or task is paused)."""

    def queue():
        """The waiting ``(eta, jobid)`` entries in due order (an iterator
        over the queue's partitions)."""

    def oldestWaiting():
        """``(eta, jobid)`` of the waiting job due first, or None."""

    def claim(now=None, worker=None, limit=1, lease=None, spread=False,
              tasks=None, queues=None):
        """Take up to ``limit`` due jobs out of the queue, mark them
        ``processing`` for ``worker`` with a lease of ``lease`` seconds,
        and return them.

        ``spread``: not in strict due order: start from the queue
        partition where this thread's last claim found jobs (one drawn at
        random at first and after a conflict) and take one of the first few
        due entries of each partition at random, so concurrent workers (and
        producers) rarely write the same BTree bucket (see docs/design.md).
        Processors use it; without it, claims are strictly in due order.

        ``tasks``: a set of task names; jobs of other tasks are left in the
        queue for workers that have them (as a Celery worker consumes only
        its queues).  A claim looks at most ``SCAN_PAST`` (256) due jobs of
        other tasks past the ones it takes; workers pass the names of the
        tasks registered in their process.

        ``queues``: the names of the queues to take jobs from, the first
        drained before the next, each from its highest priority down (None:
        every queue, by priority, higher first).  Paused queues and tasks
        are left alone; so are jobs of a task with ``concurrency=N`` while
        N of its jobs are processing, and of a task with a ``rate_limit``
        whose budget is spent: the claim takes a free concurrency slot and
        records the start in its own transaction, so concurrent claims that
        would overshoot a limit conflict.  Held-back jobs count in the
        ``SCAN_PAST`` a claim looks past, per (queue, priority).

        Two transactions that claim the same job can not both commit: the
        second gets a ``ConflictError`` (its caller retries, and finds the
        job gone from the queue).  Each claim counts a start, opens an
        attempt record and gives the job a fresh progress object.
        """

    def queues(now=None):
        """A list of dicts, one per queue that has had jobs (and
        'default'), by name: ``queue``, ``waiting`` (queued, delayed and
        cron jobs), ``processing``, ``paused`` (True if the queue is),
        ``oldest_due`` (epoch) and ``oldest_age`` (seconds it is overdue,
        None if none is due), ``priorities`` (of its waiting jobs)."""

    def pause(queue=None, task=None, now=None):
        """Pause a queue, a task, a task in a queue, or (neither given)
        everything: its waiting jobs are not claimed; processing ones
        finish.  Return False if that pause was there already.

        :raises InvalidInputError: for a queue or task that is not a name.
        """

    def resume(queue=None, task=None):
        """Remove the pauses that match (None matches any: ``resume()``
        removes them all); return how many."""

    def paused():
        """The pauses: a list of ``{'queue', 'task', 'since'}`` (None: any
        queue, any task)."""

    def pausedCount():
        """How many waiting jobs pauses hold back."""

    def retryAll(queue=None, task=None, now=None, dry_run=False,
                 limit=None):
        """Queue again every job that ended ``error`` (of ``queue`` and
        ``task``, None: any); return how many (with ``dry_run``: how many
        it would, changing nothing).

        The bulk actions (``retryAll``, ``purge``, ``deleteJobs``) act in
        the caller's one transaction: on many jobs that is one large
        transaction that conflicts with the workers for its whole length.
        ``limit`` (an integer >= 1) acts on at most that many jobs.  For
        big queues run ``remotetask.bulk``'s steps (``retryStep``,
        ``purgeStep``, ``deleteStep``: bounded, with a cursor) one
        transaction each, as the command line, XML-RPC and the page do
        (``remotetask.bulk.run``).

        :raises InvalidInputError: for a bad filter or ``limit``.
        """

    def purge(queue=None, task=None, dry_run=False, limit=None):
        """Cancel every queued, delayed, start-later and deferred job of
        ``queue`` and ``task`` (cron jobs are schedules: cancel them by
        id); return how many (``dry_run``: how many it would).  One
        transaction; ``limit``: see ``retryAll``."""

    def deleteJobs(status=None, queue=None, task=None, before=None,
                   dry_run=False, limit=None):
        """Delete the jobs in ``status`` (a status or a list; None: every
        status but processing) of ``queue`` and ``task``, created or ended
        before the epoch time ``before`` if given; return how many
        (``dry_run``: how many it would).  One transaction; ``limit``:
        see ``retryAll``.

        :raises InvalidStatusError: for ``processing`` or an unknown
            status.
        """

    def claimNextJob(now=None):
        """Claim the next due job and return it, or None (lovely's name for
        ``claim(now)`` of one job, without a worker or a lease).  With an
        explicit ``now``, lovely's rules (see "Time"): provisional cron
        jobs are scheduled from it first, and queued jobs queued after
        ``now`` are made due at ``now``; then ``claim(now)`` takes the
        job."""

    def run(job, now=None, reporter=None, cancelled=None):
        """Run a claimed job's task and record the outcome; return it
        (``'completed'``, ``'error'``, ``'retry'``, ``'cronjob'``).

        The task's ZODB writes are rolled back (to a savepoint) if it fails.
        ``reporter(jobid, fraction, message)`` receives the task's progress
        reports (default: written on the job in this transaction);
        ``cancelled`` is a ``threading.Event`` the task sees as
        ``ITaskContext.cancelled``.

        :raises InvalidStatusError: if the job is not processing.
        :raises transaction.interfaces.TransientError: (ConflictError...)
            raised by the task, for the caller to retry the transaction.
        :raises LeaseLost: if, when the task returns, the job is no longer
            processing under the claim it started with (the task committed
            or aborted the transaction and the job was ended meanwhile).
        """

    def claimToken(job):
        """A value identifying the current claim of a processing job (it
        changes with every claim)."""

    def owns(job, token):
        """True while ``job`` is processing under the claim that gave
        ``token``: not handed back, reaped, ended or claimed again since.
        A worker checks it in the transaction that records the outcome."""

    def handBack(job, now=None, reason='handed back', ran=False):
        """Put a processing job back in the queue at once (a worker stopping
        before it could run or finish it).  The start counts only if the
        job ``ran`` (its task was called: a job that keeps stopping its
        workers reaches ``max_starts``); ``completed`` is left as it was
        (the job did not complete).  The attempt is recorded with outcome
        ``'handed back'``.

        :raises InvalidStatusError: if the job is not processing.
        """

    def giveUp(job, error, exc=None, trace=None, now=None):
        """End a processing job whose run could not be completed by its
        worker (it kept conflicting, or failed outside its task): a retry
        with back-off if ``exc`` is a ``TransientError`` (conflicts) or an
        instance of a class in the task's ``retry_on`` and retries are
        left, else ``error`` with the message ``error``.  Return the
        outcome.

        :raises InvalidStatusError: if the job is not processing.
        """

    def processNext(now=None, jobid=None):
        """Claim and run one job (the next due one, or ``jobid``, even if
        it is not due yet or waits for ``startJob``), in the current
        transaction; return True if a job ran, False if none was due.  The
        next due job is ``claimNextJob(now)``'s (lovely's rules for an
        explicit ``now``).

        :raises JobNotFoundError: if there is no job ``jobid``.
        :raises InvalidStatusError: if job ``jobid`` is not waiting
            (queued, delayed, cron or start later).
        :raises transaction.interfaces.TransientError: raised by the task.
        """

    def process(now=None):
        """Run every job due at ``now`` in the current transaction (the
        eager mode of the tutorial and of tests; a job that becomes due
        again at once, such as a retry without delay, runs again until its
        retries are used up).  Jobs that become due after ``now`` wait.
        Jobs are claimed by ``claimNextJob(now)`` (lovely's rules for an
        explicit ``now``).

        :raises transaction.interfaces.TransientError: raised by a task.
        """

    def reap(now=None):
        """Hand back the processing jobs whose lease has expired: queue them
        again, or end them ``error`` when their start count reached their
        maximum or they over-ran their time limit.  Return their ids."""

    def maintain(now=None):
        """Periodic housekeeping, run by processors in a transaction of its
        own every few seconds: ``reap(now)``, then every
        ``IServiceMaintenance`` utility.  Return the reaped job ids.

        A maintenance utility that fails is logged and its writes rolled
        back (to a savepoint); the others still run.

        :raises transaction.interfaces.TransientError: (ConflictError...)
            for the caller to retry, at its next tick.
        """

    def startProcessing(**options):
        """Start a processor (``IProcessor``) for this service in this
        process and return it; if one already runs, return that one.  The
        options are those of ``remotetask.processor.Processor``.  As in
        lovely.remotetask, but the processor owns its threads and their
        stop event, and it is kept in a registry of the process keyed by
        the database and the service's oid (never found by thread name).

        :raises ServiceNotStoredError: if the service is not stored in a
            database and committed (the processor opens connections of its
            own and must find it there).
        :raises ValueError: for a bad option.
        """

    def stopProcessing(timeout=None):
        """Stop the processor started by ``startProcessing`` (see
        ``IProcessor.stop``); return False if none ran in this process."""

    def isProcessing():
        """True while a processor of this process runs this service."""


class IServiceMaintenance(zope.interface.Interface):
    """A named utility called by ``ITaskService.maintain()`` (the tracker
    uses one to re-enqueue zombies and delete retired tasks).  A failing
    one is logged and does not stop the others."""

    def __call__(service, now):
        """Do housekeeping on ``service`` in the current transaction."""


class IProcessor(zope.interface.Interface):
    """Runs jobs of a stored service from threads of its own.

    A processor owns its threads and their stop event; it opens its own
    connections to the database and runs each claim and each job in a
    transaction of its own (see the module documentation above).  With
    ``concurrency`` 1 it runs one job at a time; with N, N at once (one
    thread each).  Idle threads wake up when the database reports that the
    queue changed (ZODB invalidations), when ``wake()`` is called, when the
    clock sees a delayed or cron job come due (within a second), and at
    least every ``poll_interval`` seconds (on RelStorage with PostgreSQL,
    while the LISTEN connection stands: when a NOTIFY comes, or when the
    clock's look, every ``pgnotify.QUIET_POLL`` seconds, finds a job due:
    ``remotetask.quiet``).
    """

    worker_id = zope.interface.Attribute(
        'The name it records on the jobs it runs (each thread adds "/N")')
    concurrency = zope.interface.Attribute('The number of worker threads')
    lease = zope.interface.Attribute(
        'Seconds a claim holds unless renewed (renewed while a job runs)')
    grace = zope.interface.Attribute('The default timeout of ``stop()``')
    around = zope.interface.Attribute(
        'None, or ``around(service, job)`` -> a context manager each run of '
        'a job is made in (an application context: site, user)')
    running = zope.interface.Attribute('True while its threads run')
    stats = zope.interface.Attribute(
        'A dict of counters: claimed, processed (completed + failed + '
        'retried), completed, failed, retried, lost (results dropped because '
        'the claim was lost), handed_back, commits (claims and runs '
        'committed), conflicts (attempts of those that ended in a '
        'ConflictError or another transient error), '
        'storage_errors, maintenance_runs, reaped, running (jobs now '
        'claimed) and claim_size (jobs the next claim takes)')

    def start():
        """Start the threads.

        :raises RuntimeError: if it is already running.
        :raises ServiceNotStoredError: if the service is not committed.
        :raises remotetask.interfaces.ConfigurationError: if there is no service
            under its name.
        """

    def stop(timeout=None):
        """Stop claiming, let running jobs finish (up to ``timeout``
        seconds, default: the processor's ``grace``), hand back those that
        did not (and the claimed jobs not yet started), and join the
        threads.  The tasks still running see ``cancelled``; whatever they
        return later is dropped.  Return the ids of the jobs handed back."""

    def wake():
        """Tell idle threads to claim now (jobs were added).  Thread-safe."""

    def claimSize():
        """How many jobs the next claim asks for: the fixed ``batch``, or
        with ``batch='auto'`` about 0.1 s of work as judged by the recent
        jobs' durations (1 until a job has run)."""

    def taskNames():
        """The names of the tasks it runs (those registered in its
        process); recorded in the worker registry."""

    def runningJobs():
        """The ids of the jobs its threads have claimed and not ended."""


# -- Events -----------------------------------------------------------------

class IJobEvent(zope.interface.Interface):
    """Something happened to a job."""

    job = zope.interface.Attribute('The job')
    service = zope.interface.Attribute('Its service')


class IJobStarted(IJobEvent):
    """A job was claimed and is about to run."""


class IJobCompleted(IJobEvent):
    """A job's task returned."""


class IJobFailed(IJobEvent):
    """A job's task failed; the job ended ``error``."""


class IJobRetried(IJobEvent):
    """A job's task failed or asked for a retry; it is queued again."""


class IJobCancelled(IJobEvent):
    """A job was cancelled."""


IJobs = IEnumerableMapping

"""Bulk actions in bounded steps: retry every failed job, purge the
waiting ones, delete the jobs that match a filter.

``docs/routing.md`` ("Bulk actions") is the design note.  In short:

- **A step** (``retryStep``, ``purgeStep``, ``deleteStep``) walks the
  status indexes of its action in id order, from a cursor, lazily (``CHUNK``
  ids read at a time, never the whole list), and acts on the jobs that
  match the filter (queue, task, ``before``).  It stops after ``limit``
  matches or after looking at ``scan`` ids (by default ``SCAN_FACTOR`` x
  ``limit``), whichever comes first, so a step with few matches among
  many jobs is bounded too.  It returns a ``Step``: how many jobs it acted
  on (or, ``dry_run``, would), the new cursor, and ``more`` (it stopped at
  a bound rather than at the end).
- **The cursor** is ``{status: last id looked at}``, ``None`` for a
  status walked to its end; a status not in it is walked from its start.
  The jobs a step acted on leave the statuses it walks (retried, cancelled
  or deleted), so the cursor is what guarantees the end: the jobs a step
  looked at and left alone (not matching), and a retried job that failed
  again meanwhile, are behind it and not looked at again.  Jobs that
  enter a status during a walk are met if their id is past the cursor
  (ids follow creation order only roughly: each producer takes them in
  blocks): a walk is not a snapshot, repeat it to catch those.
- **Transactions.**  A step acts in the caller's transaction.  The
  command line, XML-RPC and the page run one step per transaction (``run``
  loops them with a ``ServiceRunner``), so a conflict with a worker or a
  producer retries one step, and no transaction holds more than ``limit``
  changed jobs.  The service's ``retryAll``, ``purge`` and ``deleteJobs``
  are the whole walk (or ``limit`` jobs) in the caller's one transaction,
  as before.
- **Filters.**  A task filter is a membership test in the task index (no
  job loaded); a queue or ``before`` filter loads the job.  Both count
  against ``scan``.
"""
import collections
import itertools
import math

from remotetask import routing
from remotetask.interfaces import (
    DEFERRED, DELAYED, ERROR, PROCESSING, QUEUED, STARTLATER, STATUSES,
    InvalidInputError, InvalidStatusError)
from remotetask.numbers import isInt, isNumber, shortRepr

#: The jobs a step acts on when not told otherwise (the JSON API's
#: default ``limit``), and the most a caller may ask for per step.
BATCH = 1000
MAX_LIMIT = 10000
#: A step looks at most SCAN_FACTOR x limit ids.
SCAN_FACTOR = 10
#: Ids read from an index at a time.
CHUNK = 500

#: What ``purge`` cancels: waiting jobs that are not cron jobs (a cron
#: job is a schedule: cancel it by id).
PURGEABLE = (QUEUED, DELAYED, STARTLATER, DEFERRED)
#: What ``deleteJobs`` removes unless told otherwise.
DELETABLE = tuple(s for s in STATUSES if s != PROCESSING)

#: What a step did: ``count`` jobs acted on (or counted, dry run), the
#: ``cursor`` to give the next step, ``more`` if it stopped at a bound.
Step = collections.namedtuple('Step', 'count cursor more')


# -- Checking input ------------------------------------------------------------

def checkLimit(limit, maximum=MAX_LIMIT):
    """``limit`` if it is an integer from 1 to ``maximum``, else
    InvalidInputError."""
    if not isInt(limit) or not 1 <= limit <= maximum:
        raise InvalidInputError(
            'limit must be an integer %s, not %s' % (
                '>= 1' if math.isinf(maximum)
                else 'from 1 to %d (jobs per step)' % maximum,
                shortRepr(limit)))
    return limit


def checkCursor(cursor, statuses):
    """A cursor given back by a caller: None, or a mapping of some of
    ``statuses`` to a job id (an integer >= 0) or None.  Returns a dict;
    InvalidInputError otherwise."""
    if cursor is None:
        return {}
    if not isinstance(cursor, dict):
        raise InvalidInputError(
            'cursor must be the cursor of the previous step (an object of '
            'statuses to job ids), not %s' % shortRepr(cursor))
    for status, last in cursor.items():
        if status not in statuses:
            raise InvalidInputError(
                'cursor: %s is not a status of this action (%s)'
                % (shortRepr(status), ', '.join(statuses)))
        if last is not None and (not isInt(last) or last < 0):
            raise InvalidInputError(
                'cursor: the position of %r must be a job id or null, not %s'
                % (status, shortRepr(last)))
    return dict(cursor)


def checkStatuses(status, default):
    """The statuses of ``status`` (a status, a list of them, or None:
    ``default``), checked."""
    if status is None:
        return default
    statuses = (status,) if isinstance(status, str) else tuple(status)
    for s in statuses:
        if s not in STATUSES:
            raise InvalidStatusError('unknown status %r' % (s,))
    return statuses


def _checkBefore(before):
    if before is not None and (not isNumber(before) or math.isnan(before)):
        raise InvalidInputError('before must be epoch seconds, not %r'
                                % (before,))
    return before


# -- The walk ------------------------------------------------------------------

def _ids(service, status, after):
    """The ids of ``status`` after ``after`` (None: from the start), in
    id order, read ``CHUNK`` at a time: each chunk is a list (acting on a
    job changes the index being read), the next read starts after it."""
    index = service._index[status]
    while True:
        chunk = list(itertools.islice(
            index.keys(min=after, excludemin=after is not None), CHUNK))
        if not chunk:
            return
        yield from chunk
        after = chunk[-1]


def step(service, statuses, act, queue=None, task=None, match=None,
         limit=BATCH, scan=None, cursor=None, dry_run=False):
    """One step of a bulk action (see the module docstring): act, with
    ``act(jobid)``, on up to ``limit`` jobs of ``statuses`` that are of
    ``queue`` and ``task`` (None: any) and for which ``match(job)`` is
    true (if given), looking at up to ``scan`` ids (None: ``SCAN_FACTOR``
    x ``limit``; ``math.inf`` for both: the whole walk)."""
    queue, task = routing.checkFilter(queue, task)
    cursor = checkCursor(cursor, statuses)
    if limit != math.inf:
        checkLimit(limit, maximum=math.inf)
    if scan is None:
        scan = limit * SCAN_FACTOR
    if dry_run and queue is None and task is None and match is None \
            and not cursor:
        # Counting everything: the status counters, no walk.
        return Step(sum(service.count(s) for s in statuses),
                    dict.fromkeys(statuses), False)
    byTask = None if task is None else service.jobIds(task=task)
    done = looked = 0
    for status in statuses:
        if status in cursor and cursor[status] is None:
            continue                    # walked to its end already
        last = cursor.get(status)
        ended = True
        for jobid in _ids(service, status, last):
            if done >= limit or looked >= scan:
                ended = False
                break
            looked += 1
            last = jobid
            if byTask is not None and jobid not in byTask:
                continue
            job = service.jobs.get(jobid)
            # (An earlier action of this walk may have changed it: a
            # workflow's cancel or delete goes down its graph.)
            if job is None or job._status not in statuses:
                continue
            if queue is not None and routing.jobQueue(job) != queue:
                continue
            if match is not None and not match(job):
                continue
            if not dry_run:
                act(jobid)
            done += 1
        cursor[status] = None if ended else last
        if not ended:
            return Step(done, cursor, True)
    return Step(done, cursor, False)


# -- The actions ---------------------------------------------------------------

def retryStep(service, queue=None, task=None, now=None, dry_run=False,
              limit=BATCH, cursor=None, scan=None):
    """A step of ``retryAll``: queue again failed jobs."""
    return step(service, (ERROR,),
                lambda jobid: service.retry(jobid, now=now), queue, task,
                limit=limit, scan=scan, cursor=cursor, dry_run=dry_run)


def purgeStep(service, queue=None, task=None, dry_run=False, limit=BATCH,
              cursor=None, scan=None):
    """A step of ``purge``: cancel waiting jobs (not cron jobs)."""
    return step(service, PURGEABLE, service.cancel, queue, task,
                limit=limit, scan=scan, cursor=cursor, dry_run=dry_run)


def deleteStep(service, status=None, queue=None, task=None, before=None,
               dry_run=False, limit=BATCH, cursor=None, scan=None):
    """A step of ``deleteJobs``: delete jobs (never processing ones),
    of ``status`` (a status or a list; None: every other status),
    created or ended before the epoch time ``before`` if given."""
    statuses = checkStatuses(status, DELETABLE)
    if PROCESSING in statuses:
        raise InvalidStatusError('processing jobs can not be deleted')
    before = _checkBefore(before)
    match = None if before is None else (
        lambda job: (job.completed or job.created) < before)
    return step(service, statuses, service.delete, queue, task, match,
                limit=limit, scan=scan, cursor=cursor, dry_run=dry_run)


#: The steps by action name (the web and the command line).
STEPS = {'retry': retryStep, 'purge': purgeStep, 'delete': deleteStep}


def _whole(stepFunc, service, limit, kw):
    """The whole walk (or its first ``limit`` jobs) in one step: the
    service's one-transaction ``retryAll``, ``purge`` and ``deleteJobs``."""
    if limit is not None:
        checkLimit(limit, maximum=math.inf)
    return stepFunc(service, limit=math.inf if limit is None else limit,
                    scan=math.inf, **kw).count


def retryAll(service, queue=None, task=None, now=None, dry_run=False,
             limit=None):
    return _whole(retryStep, service, limit, dict(
        queue=queue, task=task, now=now, dry_run=dry_run))


def purge(service, queue=None, task=None, dry_run=False, limit=None):
    return _whole(purgeStep, service, limit, dict(
        queue=queue, task=task, dry_run=dry_run))


def deleteJobs(service, status=None, queue=None, task=None, before=None,
               dry_run=False, limit=None):
    return _whole(deleteStep, service, limit, dict(
        status=status, queue=queue, task=task, before=before,
        dry_run=dry_run))


# -- Steps in transactions of their own -----------------------------------------

def run(runner, stepFunc, limit=None, batch=None, committed=None, **kw):
    """Run ``stepFunc(service, limit=..., cursor=..., **kw)`` in steps of
    at most ``batch`` (None: ``BATCH``) jobs, each in a transaction of its own (``runner``:
    a ``db.ServiceRunner``; a conflict retries that step only), until the
    walk ends or ``limit`` jobs (None: no limit) were acted on; return
    how many.  ``committed(step)`` is called after each step's commit."""
    batch = checkLimit(BATCH if batch is None else batch)
    if limit is not None:
        checkLimit(limit, maximum=math.inf)
    total, cursor = 0, None
    while True:
        n = batch if limit is None else min(batch, limit - total)
        result = runner(lambda s: stepFunc(s, limit=n, cursor=cursor, **kw))
        total += result.count
        cursor = result.cursor
        if committed is not None:
            committed(result)
        if not result.more or (limit is not None and total >= limit):
            return total

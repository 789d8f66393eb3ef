"""When waiting jobs are due: cron and delayed jobs, and lovely.remotetask's
fake clock.  The service delegates here; the rules are stated in the "Time"
section of ``remotetask.interfaces``.

lovely.remotetask computed the first call time of a cron (or delayed) job
from the ``now`` of the first processing call that saw it, and ran its plain
queue whatever ``now`` was, so its doctests drive the service with a clock of
their own: ``process(0)``, ``process(10 * 60)``.  remotetask schedules every
job when it is added, from the clock, because processors (and the web page)
need the real time of the next call.  Both hold here:

- a cron job added (or rescheduled) without an explicit ``now`` gets its
  call time from the clock, *provisionally*: its id and that time are kept
  in the service's ``_provisional`` map (one entry per such job, removed
  when it runs or is deleted);
- the first of lovely's processing calls given an explicit ``now``
  (``process``, ``processNext``, ``claimNextJob``, ``hasJobsWaiting``)
  re-computes those call times from its ``now`` (``anchor``), as lovely
  did; a job that ran or was rescheduled since keeps its time;
- with an explicit ``now``, those calls also make ``queued`` jobs due at
  that ``now`` whatever their queue time (``dueQueued``): a queued job is
  due at any ``now``.  They then claim with ``claim(now)``, so queues'
  pauses, priorities and limits apply as for processors.

``claim()``, which processors use, never does either: it takes what is due
at its ``now`` by the queue, which for the real clock is the same thing.
"""
import itertools

from BTrees.LOBTree import LOBTree

from remotetask import routing
from remotetask.interfaces import CRONJOB, DELAYED, QUEUED

#: How many queued jobs (the oldest ids) lovely's processing calls look at
#: for a queue time after their ``now`` (see ``dueQueued``).
SCAN = 100


def waitingStatus(job):
    """The status a cron job waits in: ``cronjob`` if it repeats, else
    ``delayed`` (lovely's one-off ``addCronJob(delay=...)``)."""
    return CRONJOB if job.repeats() else DELAYED


def provisional(service, job, given):
    """Record that cron job ``job`` (in the queue at ``job.eta``) was
    scheduled from the clock (``given`` False: no ``now`` was passed), or
    that it was not (its entry, if any, is dropped)."""
    pending = service._provisional
    if given:
        if pending is not None and job.id in pending:
            del pending[job.id]
        return
    if pending is None:
        pending = service._provisional = LOBTree()
    pending[job.id] = job.eta


def forget(service, job):
    """Drop the provisional entry of a cron job that runs or goes away."""
    pending = service._provisional
    if pending is not None and job.id in pending:
        del pending[job.id]


def runsAgain(service, job):
    """After a run of cron job ``job``: drop its provisional entry, and
    say whether it goes back to wait for its next call (it repeats) or
    ends like a plain job (lovely's one-off delayed job)."""
    forget(service, job)
    return job.repeats()


def anchor(service, now):
    """Schedule the provisional cron jobs from ``now`` (lovely's way: the
    first processing call that sees a job decides its first call time).
    Return the ids of the jobs moved."""
    pending = service._provisional
    if not pending:
        return []
    moved = []
    for jobid, eta in list(pending.items()):
        del pending[jobid]
        job = service.jobs.get(jobid)
        if job is None or job._status not in (CRONJOB, DELAYED) \
                or job.eta != eta:
            continue        # ran, was cancelled or rescheduled since
        service._transition(job, job._status, job.timeOfNextCall(now))
        moved.append(jobid)
    return moved


def dueQueued(service, now):
    """Make the ``queued`` jobs whose queue time is after ``now`` due at
    ``now`` (their entry moves to ``now`` in their queue, so ``claim(now)``
    takes them, with the queue's pauses and limits).  At most ``SCAN`` jobs
    move, and at most ``10 * SCAN`` queued jobs (the oldest ids) are looked
    at (those of a paused queue, moved by an earlier call, are passed
    over).  Return how many moved."""
    moved = 0
    ids = list(itertools.islice(iter(service.jobIds(QUEUED)), 10 * SCAN))
    for jobid in ids:
        job = service.jobs[jobid]
        if job.eta is not None and job.eta > now:
            service._transition(job, QUEUED, now)
            moved += 1
            if moved >= SCAN:
                break
    return moved


def claimNext(service, now=None, due=None):
    """The next job claimed for lovely's processing calls, or None.

    ``now`` given: lovely's fake clock (``anchor``, then ``claim(now)``,
    and if nothing was due, ``dueQueued`` and ``claim(now)`` again: queued
    jobs are looked at only when the queue has nothing due, so draining a
    backlog loads each of them about once).  Else the clock: what
    ``claim(due)`` takes (None: the current time)."""
    if now is None:
        claimed = service.claim(due)
    else:
        anchor(service, now)
        claimed = service.claim(now)
        if not claimed and dueQueued(service, now):
            claimed = service.claim(now)
    return claimed[0] if claimed else None


def hasJobsWaiting(service, now):
    """lovely's ``hasJobsWaiting(now)`` for an explicit ``now``."""
    anchor(service, now)
    if routing.hasDue(service, now):
        return True
    return bool(dueQueued(service, now)) and routing.hasDue(service, now)

"""Runaway protection: what keeps one job from growing or repeating
without bound.  The service delegates to these functions; see
docs/uptime.md for the reasons behind each number.

- Times: an ``eta`` or ``delay`` must be a finite number that lands
  before the year 10000 (``HORIZON``); anything else is refused with
  ``InvalidInputError`` before anything is stored (1e308, NaN and
  infinities made the page unable to show any job, and a queue entry
  that is never due is a job that is never run nor cleaned).
- Cron jobs: a schedule that repeats faster than once every
  ``MIN_CRON_PERIOD`` second is refused (``InvalidScheduleError``): a
  ``delay=1e-9`` cron job ran 50 times a second and filled the disk.
- Attempt history: a job keeps its first ``FIRST_ATTEMPTS`` and last
  ``LAST_ATTEMPTS`` attempts and a count of all of them, so a cron job run
  100,000 times takes the space of one run ten times.
- Cancel requests: cancelling a job that is processing writes a flag on
  the run's small progress object (never the job: the run's end writes
  the job, and a conflict there would run the task again).  The worker's
  clock reads it and sets the task's ``cancelled``; the run's end, and the
  next claim of a cron job, honour it.
"""

from remotetask.interfaces import InvalidInputError, InvalidScheduleError
from remotetask.numbers import checkNumber

#: Epoch seconds of 9999-12-31T23:59:59Z: the last time a job may be due.
HORIZON = 253402300799.0

#: Cron jobs may not repeat more often than once per this many seconds.
MIN_CRON_PERIOD = 1.0

#: Attempts kept at the start and at the end of a job's history.
FIRST_ATTEMPTS = 2
LAST_ATTEMPTS = 8


def checkTime(name, value, now=0.0):
    """``value`` (epoch seconds, or a delay added to ``now``) as a float;
    InvalidInputError when it is not a finite number or lands past
    ``HORIZON``."""
    number = checkNumber(name, value)      # finite, of any size
    if now + number > HORIZON:
        raise InvalidInputError(
            '%s %r is too far in the future: a job must be due before the '
            'year 10000 (epoch %d)' % (name, value, HORIZON))
    return number


def checkCronPeriod(job, now):
    """Refuse the schedule of the cron job ``job`` if two consecutive calls
    are less than ``MIN_CRON_PERIOD`` apart."""
    if job.delay is not None:
        # lovely's one-off delayed job: it does not repeat.
        if now + job.delay > HORIZON:
            raise InvalidScheduleError(
                'delay %r is too far in the future: a job must be due '
                'before the year 10000' % (job.delay,))
        return
    if job.interval is not None:
        if job.interval < MIN_CRON_PERIOD:
            raise InvalidScheduleError(
                'a cron job may repeat at most once a second: interval must '
                'be >= %g seconds, not %r' % (MIN_CRON_PERIOD, job.interval))
        return
    first = job.timeOfNextCall(now)
    second = job.timeOfNextCall(first)
    if second - first < MIN_CRON_PERIOD:
        raise InvalidScheduleError(
            'a cron job may repeat at most once a second: %s runs every '
            '%gs' % (job._describe(), second - first))
    if first > HORIZON:
        raise InvalidScheduleError('the schedule %s is first due after the '
                                   'year 9999' % (job._describe(),))


def boundedAttempts(attempts, record):
    """``attempts`` (a tuple) with ``record`` added, keeping the first
    ``FIRST_ATTEMPTS`` and the last ``LAST_ATTEMPTS``."""
    attempts = attempts + (record,)
    if len(attempts) > FIRST_ATTEMPTS + LAST_ATTEMPTS:
        attempts = attempts[:FIRST_ATTEMPTS] + attempts[-LAST_ATTEMPTS:]
    return attempts


def requestCancel(job, now):
    """Ask the running job to stop: see the module docstring."""
    progress = job._progress
    if progress is None:        # claimed by an old version: make one
        from remotetask.job import _Progress
        progress = job._progress = _Progress()
    progress.cancel_requested = now


def cancelRequested(job):
    """True if cancelling was asked while the job's last claim held."""
    progress = job._progress
    return progress is not None and progress.cancel_requested is not None

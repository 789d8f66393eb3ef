"""Jobs and cron jobs.  See ``interfaces.IJob`` and ``interfaces.ICronJob``.

A job's status is changed only by its service (``service._transition``),
which keeps the queue and the status indexes in step with it.
"""
import contextlib
import contextvars
import datetime
import time

import persistent
import zope.interface
from ZODB.POSException import ConflictError

from remotetask import interfaces, limits
from remotetask.interfaces import InvalidScheduleError
from remotetask.numbers import checkNumber, shortRepr


class _Lease(persistent.Persistent):
    """The lease of a processing job, a persistent object of its own so
    that renewing it never conflicts with the job's completion."""

    def __init__(self, worker=None, expires=None):
        self.worker = worker
        self.expires = expires


class _Progress(persistent.Persistent):
    """Progress reported by a running task (own object, same reason)."""

    fraction = None
    message = ''
    updated = None
    cancel_requested = None     # epoch seconds of a cancel request


_MISSING = object()


class _Run(persistent.Persistent):
    """One start of a job: its lease and its progress in ONE persistent
    object of their own (``job._lease is job._progress``), so that neither
    a lease renewal nor a progress report nor a cancel request writes the
    job, and a claim stores one new object per job, not two (over ZEO,
    each stored object is a message, a record and an invalidation to every
    other client).  Jobs claimed before keep a ``_Lease`` and a
    ``_Progress``, read the same way.

    The clock renews the lease (``expires``), a task's thread reports
    progress, a user asks for the cancel, each from a connection of its
    own: ``_p_resolveConflict`` merges concurrent changes of different
    attributes (on a ZEO server, where remotetask must be importable for
    it; without, such a conflict is retried)."""

    fraction = None
    message = ''
    updated = None
    cancel_requested = None

    def __init__(self, worker=None, expires=None):
        self.worker = worker
        self.expires = expires

    def _p_resolveConflict(self, old, committed, new):
        old = old or {}
        result = dict(committed)
        for key in set(old) | set(committed) | set(new):
            was = old.get(key, _MISSING)
            theirs = committed.get(key, _MISSING)
            mine = new.get(key, _MISSING)
            if mine == was or mine == theirs:
                continue                # ours did not change it
            if theirs == was:
                value = mine            # only ours changed it
            elif key in ('expires', 'updated') \
                    and None not in (theirs, mine) \
                    and _MISSING not in (theirs, mine):
                value = max(theirs, mine)   # two renewals, reports: the later
            else:
                raise ConflictError('both changed %r of a job run' % key)
            if value is _MISSING:
                result.pop(key, None)
            else:
                result[key] = value
        return result


@zope.interface.implementer(interfaces.IJob)
class Job(persistent.Persistent):
    """See IJob."""

    # Class defaults keep old pickles readable when attributes are added.
    output = None
    error = None
    traceback = None
    started = None
    completed = None
    eta = None
    worker = None
    starts = 0
    retries = 0
    max_starts = None
    max_retries = None
    time_limit = None
    attempts = ()
    _attemptCount = None
    meta = None
    queue = 'default'
    priority = 0
    unique_key = None
    _slot = None        # the concurrency slot a processing job holds
    _lease = None
    _progress = None
    # Workflows (remotetask.workflows): the ids of the parents, the
    # children's links, what a deferred job still waits for.
    _after = ()
    _links = None
    _countdown = None
    _inputFrom = None
    _cancelledBy = None

    def __init__(self, id, task, input=None, created=None):
        self.id = id
        self.task = task
        self.input = input
        self._status = interfaces.QUEUED
        self.created = time.time() if created is None else created
        self.meta = {}

    @property
    def status(self):
        """See IJob (read-only: the service changes it)."""
        return self._status

    @property
    def lease_expires(self):
        """See IJob."""
        return None if self._lease is None else self._lease.expires

    @property
    def progress(self):
        """See IJob."""
        if self._progress is None:
            return (None, '')
        return (self._progress.fraction, self._progress.message)

    def setProgress(self, fraction=None, message='', now=None):
        """Record progress on the job's own progress object."""
        if fraction is not None:
            fraction = float(fraction)
            if not 0.0 <= fraction <= 1.0:
                raise ValueError(
                    'progress fraction must be between 0 and 1, not %r'
                    % fraction)
        if self._progress is None:
            self._progress = _Progress()
        self._progress.fraction = fraction
        self._progress.message = str(message)
        self._progress.updated = time.time() if now is None else now

    @property
    def attempt_count(self):
        """See IJob: how many attempts there were (``attempts`` keeps the
        first and the last few of them)."""
        if self._attemptCount is None:      # stored by an older version
            return len(self.attempts)
        return self._attemptCount

    def _addAttempt(self, **record):
        self._attemptCount = self.attempt_count + 1
        self.attempts = limits.boundedAttempts(self.attempts, record)

    def _endAttempt(self, **record):
        if self.attempts:
            last = dict(self.attempts[-1])
            last.update(record)
            self.attempts = self.attempts[:-1] + (last,)

    def info(self):
        """A dict describing the job (for the CLI and the web service)."""
        return {
            'id': self.id, 'task': self.task, 'status': self.status,
            'created': self.created, 'started': self.started,
            'completed': self.completed, 'eta': self.eta,
            'worker': self.worker, 'starts': self.starts,
            'retries': self.retries, 'error': self.error,
            'progress': self.progress, 'cron': False,
            'attempt_count': self.attempt_count,
            'queue': self.queue, 'priority': self.priority,
            'unique_key': self.unique_key,
        }

    def __repr__(self):
        return '<%s %r>' % (self.__class__.__name__.replace('Cron', ''),
                            self.id)


_FIELDS = ('minute', 'hour', 'dayOfMonth', 'month', 'dayOfWeek')
_RANGES = {'minute': (0, 59), 'hour': (0, 23), 'dayOfMonth': (1, 31),
           'month': (1, 12), 'dayOfWeek': (0, 6)}


def _checkField(name, values):
    # A string is a sequence too: minute='10' would silently be (1, 0).
    try:
        if isinstance(values, (str, bytes)) or any(
                isinstance(v, (bool, float, str, bytes)) for v in values):
            raise TypeError(name)
        values = tuple(int(v) for v in values)
    except (TypeError, ValueError):
        raise InvalidScheduleError(
            '%s must be a sequence of integers, not %r' % (name, values))
    low, high = _RANGES[name]
    for v in values:
        if not low <= v <= high:
            raise InvalidScheduleError(
                '%s %d is out of range %d-%d' % (name, v, low, high))
    return values


def _expression(minute, hour, dayOfMonth, month, dayOfWeek):
    """lovely's tuple fields as a cron expression.

    As in lovely.remotetask, the finest field given sets the period: a
    schedule that names hours but no minutes runs at minute 0 of those
    hours, one that names days runs at 00:00, one that names only months
    runs on the 1st at 00:00.  Cron counts week days from Sunday = 0.
    """
    if not minute and (hour or dayOfMonth or month or dayOfWeek):
        minute = (0,)
        if not hour and (dayOfMonth or month or dayOfWeek):
            hour = (0,)
            if not dayOfMonth and not dayOfWeek:
                dayOfMonth = (1,)

    def field(values):
        return ','.join(str(v) for v in sorted(set(values))) or '*'
    return ' '.join((field(minute), field(hour), field(dayOfMonth),
                     field(month),
                     field((d + 1) % 7 for d in dayOfWeek)))


def _seconds(name, value, zeroIsNone=False):
    """A positive finite number of seconds (of any size: checkNumber), or
    InvalidScheduleError naming ``name``."""
    if value is None or (zeroIsNone and value == 0
                         and not isinstance(value, bool)):
        return None
    try:
        return checkNumber(name, value, 0, allowLow=False)
    except ValueError:
        raise InvalidScheduleError(
            '%s must be a positive finite number of seconds, not %s'
            % (name, shortRepr(value))) from None


@zope.interface.implementer(interfaces.ICronJob)
class CronJob(Job):
    """See ICronJob."""

    minute = hour = dayOfMonth = month = dayOfWeek = ()
    delay = None
    interval = None
    expression = None
    timezone = None

    def __init__(self, id, task, input=None, minute=(), hour=(),
                 dayOfMonth=(), month=(), dayOfWeek=(), delay=None,
                 created=None, **schedule):
        # lovely's positional order: CronJob(id, task, input, minute, ...).
        super().__init__(id, task, input, created)
        self.update(minute, hour, dayOfMonth, month, dayOfWeek, delay,
                    **schedule)

    def __setstate__(self, state):
        # Before ``interval`` existed, ``delay`` repeated the job every
        # ``delay`` seconds; it now means lovely's one-off delay.  A pickle
        # without ``interval`` (update() always sets it) is such an old
        # job: it keeps repeating.
        if state.get('delay') is not None and 'interval' not in state:
            state = dict(state, interval=state['delay'], delay=None)
        super().__setstate__(state)

    def update(self, minute=(), hour=(), dayOfMonth=(), month=(),
               dayOfWeek=(), delay=None, expression=None, timezone=None,
               interval=None):
        """See ICronJob."""
        fields = {name: _checkField(name, value) for name, value in
                  zip(_FIELDS, (minute, hour, dayOfMonth, month, dayOfWeek))}
        # As in lovely.remotetask, a delay of 0 means no delay.
        delay = _seconds('delay', delay, zeroIsNone=True)
        interval = _seconds('interval', interval)
        if delay is not None and interval is not None:
            raise InvalidScheduleError(
                'give either a delay (run once) or an interval (run again '
                'and again), not both')
        if expression is not None:
            if delay is not None or interval is not None \
                    or any(fields.values()):
                raise InvalidScheduleError(
                    'give either a cron expression or the tuple fields, '
                    'delay and interval, not both')
            from croniter import croniter   # (imported when needed)
            if not croniter.is_valid(expression):
                raise InvalidScheduleError(
                    'not a valid cron expression: %r' % (expression,))
        if timezone is not None:
            if expression is None:
                raise InvalidScheduleError(
                    'a time zone applies to a cron expression only; the '
                    'tuple fields are in UTC')
            import zoneinfo     # cron jobs only (start-up time)
            try:
                zoneinfo.ZoneInfo(timezone)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise InvalidScheduleError('unknown time zone %r'
                                           % (timezone,))
        old = self.schedule()
        for name, value in fields.items():
            setattr(self, name, value)
        self.delay = delay
        self.interval = interval
        self.expression = expression
        self.timezone = timezone
        try:
            self.timeOfNextCall(0)
            limits.checkCronPeriod(self, time.time())
        except InvalidScheduleError:
            for name, value in old.items():     # keep the schedule it had
                setattr(self, name, value)
            raise

    def repeats(self):
        """See ICronJob."""
        return self.delay is None

    def timeOfNextCall(self, now=None):
        """See ICronJob."""
        if now is None:
            now = time.time()
        if self.delay is not None:
            return now + self.delay
        if self.interval is not None:
            return now + self.interval
        # Imported when needed: commands that only read jobs start faster.
        import zoneinfo

        from croniter import CroniterBadDateError, croniter
        try:
            if self.expression is not None:
                tz = zoneinfo.ZoneInfo(self.timezone or 'UTC')
                start = datetime.datetime.fromtimestamp(now, tz)
                nxt = croniter(self.expression, start).get_next(
                    datetime.datetime)
                return int(nxt.timestamp())
            expr = _expression(self.minute, self.hour, self.dayOfMonth,
                               self.month, self.dayOfWeek)
            return int(croniter(expr, now, day_or=False).get_next(float))
        except CroniterBadDateError:
            raise InvalidScheduleError(
                'the schedule %s never matches a date' % (self._describe(),))

    def _describe(self):
        if self.expression is not None:
            return repr(self.expression)
        return ', '.join('%s=%r' % (name, getattr(self, name))
                         for name in _FIELDS if getattr(self, name))

    def schedule(self):
        """The schedule as keyword arguments of ``update()``."""
        return {'minute': self.minute, 'hour': self.hour,
                'dayOfMonth': self.dayOfMonth, 'month': self.month,
                'dayOfWeek': self.dayOfWeek, 'delay': self.delay,
                'interval': self.interval, 'expression': self.expression,
                'timezone': self.timezone}

    def info(self):
        info = super().info()
        info['cron'] = True
        info['schedule'] = self.schedule()
        return info


# -- The running task's context ---------------------------------------------

_current = contextvars.ContextVar('remotetask_current_job', default=None)


@zope.interface.implementer(interfaces.ITaskContext)
class TaskContext:
    """See ITaskContext.

    ``reporter`` is called as ``reporter(jobid, fraction, message)``; the
    default writes on the job in the current transaction (a processor
    passes one that commits through a connection of its own).
    """

    def __init__(self, service, job, reporter=None, cancelled=None):
        self.service = service
        self.jobid = job.id
        self._job = job
        self._reporter = reporter
        self._cancelled = cancelled

    @property
    def cancelled(self):
        return bool(self._cancelled is not None and self._cancelled.is_set())

    def progress(self, fraction=None, message=''):
        """See ITaskContext."""
        if self._reporter is None:
            self._job.setProgress(fraction, message)
        else:
            self._reporter(self.jobid, fraction, message)

    @property
    def parents(self):
        """See ITaskContext."""
        return tuple(self._job._after)

    def parentResults(self):
        """See ITaskContext."""
        from remotetask import workflows
        return workflows.parentResults(self.service, self._job)


def currentJob():
    """The ``ITaskContext`` of the running task, or None outside a task."""
    return _current.get()


@contextlib.contextmanager
def running(context):
    """Make ``context`` the current job's context for the enclosed code."""
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)

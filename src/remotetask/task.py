"""Tasks: what jobs run.  See ``interfaces.ITask``."""
import random

import zope.interface

from remotetask import interfaces
from remotetask.interfaces import Retry, TaskError  # noqa: F401  re-exported

DEFAULT_MAX_STARTS = 3


@zope.interface.implementer(interfaces.ITask)
class TaskBase:
    """The policy attributes of a task, with their defaults.

    Subclasses implement ``__call__(service, jobid, input)``.
    """

    time_limit = None
    max_starts = DEFAULT_MAX_STARTS
    max_retries = 3
    retry_backoff = 1.0
    retry_backoff_max = 600.0
    retry_jitter = True
    retry_on = ()
    concurrency = None
    rate_limit = None
    keep = None
    grouped = True

    def __init__(self, time_limit=None, max_starts=None, max_retries=None,
                 retry_backoff=None, retry_backoff_max=None,
                 retry_jitter=None, retry_on=None, concurrency=None,
                 rate_limit=None, keep=None, grouped=None):
        # Flow control (remotetask.routing): checked here, so that a bad
        # value fails where the task is defined, not in every claim.
        from remotetask import routing
        self.concurrency = routing.checkConcurrency(concurrency)
        if keep is not None:
            # (remotetask.retention; math.inf keeps its jobs for ever)
            from remotetask.retention import checkSeconds
            self.keep = checkSeconds('keep', keep, forever='math.inf')
        if grouped is not None:
            if not isinstance(grouped, bool):
                raise ValueError('grouped must be True or False, not %r'
                                 % (grouped,))
            self.grouped = grouped
        routing.parseRate(rate_limit)
        self.rate_limit = rate_limit
        if retry_on is not None:
            self.retry_on = tuple(retry_on)
        for name, value in (('time_limit', time_limit),
                            ('max_starts', max_starts),
                            ('max_retries', max_retries),
                            ('retry_backoff', retry_backoff),
                            ('retry_backoff_max', retry_backoff_max),
                            ('retry_jitter', retry_jitter)):
            if value is not None:
                setattr(self, name, value)

    def __call__(self, service, jobid, input):
        """See ITask."""
        raise NotImplementedError


class SimpleTask(TaskBase):
    """A task that calls ``func(input)`` and returns what it returns."""

    def __init__(self, func, **policy):
        super().__init__(**policy)
        self.func = func

    def __call__(self, service, jobid, input):
        """See ITask."""
        return self.func(input)

    def __repr__(self):
        return '<%s %r>' % (self.__class__.__name__, self.func)


def retryDelay(task, retries, rng=random):
    """Seconds to wait before retry number ``retries`` (1 for the first).

    Exponential back-off: ``retry_backoff * 2 ** (retries - 1)`` capped at
    ``retry_backoff_max``; with ``retry_jitter`` a uniform draw between half
    of it and all of it.
    """
    base = float(getattr(task, 'retry_backoff', TaskBase.retry_backoff))
    cap = float(getattr(task, 'retry_backoff_max',
                        TaskBase.retry_backoff_max))
    delay = min(cap, base * (2 ** max(0, retries - 1)))
    if getattr(task, 'retry_jitter', TaskBase.retry_jitter):
        delay = rng.uniform(delay / 2.0, delay)
    return delay


def policy(task, job, name):
    """The job's override of a policy attribute, else the task's."""
    value = getattr(job, name, None)
    if value is None:
        value = getattr(task, name, getattr(TaskBase, name))
    return value

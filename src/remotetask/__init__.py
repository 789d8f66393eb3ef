"""remotetask: a task queue service that lives inside the ZODB.

``TaskService`` keeps jobs and their queue in persistent objects; tasks are
named ``ITask`` utilities.  See README.txt for the tutorial and
``interfaces`` for the specification.
"""
from remotetask.interfaces import (  # noqa: F401
    CANCELLED, COMPLETED, CRONJOB, DEFERRED, DELAYED, ERROR, PROCESSING, QUEUED,
    STARTLATER, STATUSES, InvalidInputError, InvalidScheduleError,
    InvalidStatusError, JobNotFoundError, RemoteTaskError, Retry, TaskError,
    TimeLimitExceeded, UnknownTaskError)
from remotetask.job import currentJob  # noqa: F401
from remotetask.service import TaskService  # noqa: F401
from remotetask.task import SimpleTask  # noqa: F401

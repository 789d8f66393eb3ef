"""remotetask: a task queue service that lives inside the ZODB.

``TaskService`` keeps jobs and their queue in persistent objects; tasks are
named ``ITask`` utilities.  See README.txt for the tutorial and
``interfaces`` for the specification.

The names below are imported on first use (``from remotetask import
TaskService`` works as usual): importing a submodule, e.g. the command line
``remotetask.cli``, does not load the ZODB and zope.schema.
"""
import importlib

_NAMES = {
    'remotetask.interfaces': (
        'CANCELLED', 'COMPLETED', 'CRONJOB', 'DEFERRED', 'DELAYED', 'ERROR',
        'PROCESSING',
        'QUEUED', 'STARTLATER', 'STATUSES', 'InvalidInputError',
        'InvalidScheduleError', 'InvalidStatusError', 'JobNotFoundError',
        'RemoteTaskError', 'Retry', 'TaskError', 'TimeLimitExceeded',
        'UnknownTaskError'),
    'remotetask.job': ('currentJob',),
    'remotetask.service': ('TaskService',),
    'remotetask.task': ('SimpleTask',),
}
_MODULE = {name: module for module, names in _NAMES.items()
           for name in names}
__all__ = sorted(_MODULE)


def __getattr__(name):
    module = _MODULE.get(name)
    if module is None:
        raise AttributeError('module %r has no attribute %r'
                             % (__name__, name))
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_MODULE))

"""ZCML: the ``<remotetask:task>`` directive and loading ZCML files.

``<remotetask:task name="echo" function="mypackage.tasks.echo" />``
registers ``SimpleTask(mypackage.tasks.echo)`` as the ``ITask`` utility
named ``echo``; the optional attributes ``time_limit``, ``max_starts``,
``max_retries``, ``retry_on`` (dotted names of exception classes, separated
by spaces), ``retry_backoff``, ``retry_backoff_max``, ``retry_jitter``,
``concurrency`` (at most that many jobs of the task processing at once,
across all workers), ``rate_limit`` (``N/s``, ``N/m`` or ``N/h``),
``keep`` (seconds its finished jobs are kept, see ``remotetask.retention``)
and ``grouped`` (``false``: each job commits alone) set its policy (see
``interfaces.ITask``).  A task object of your own is registered with the standard ``<utility>`` directive, providing
``remotetask.interfaces.ITask``.
"""
import os

import zope.interface
import zope.schema
from zope.component.zcml import utility
from zope.configuration import config, fields, xmlconfig

from remotetask.interfaces import ITask
from remotetask.task import SimpleTask


class ITaskDirective(zope.interface.Interface):
    """Register a plain function as a task."""

    name = zope.schema.TextLine(title='Task name', required=True)
    function = fields.GlobalObject(
        title='Dotted name of a function called as function(input)',
        required=True)
    time_limit = zope.schema.Float(title='Time limit in seconds',
                                   required=False)
    max_starts = zope.schema.Int(title='Maximum starts', required=False)
    max_retries = zope.schema.Int(title='Maximum retries', required=False)
    retry_on = fields.Tokens(
        title='Exception classes after which a job is retried',
        value_type=fields.GlobalObject(), required=False)
    retry_backoff = zope.schema.Float(title='First retry delay',
                                      required=False)
    retry_backoff_max = zope.schema.Float(title='Largest retry delay',
                                          required=False)
    retry_jitter = zope.schema.Bool(title='Randomise retry delays',
                                    required=False)
    concurrency = zope.schema.Int(
        title='Most jobs of the task processing at once', required=False)
    rate_limit = zope.schema.TextLine(
        title="Most starts per period: 'N/s', 'N/m' or 'N/h'",
        required=False)
    keep = zope.schema.Float(
        title='Seconds its finished jobs are kept (overrides the '
              "service's retention; inf: for ever)", required=False)
    grouped = zope.schema.Bool(
        title='Whether its jobs may commit in a group with others (false: '
              'each job commits alone, as soon as it ends)', required=False)


def task(_context, name, function, time_limit=None, max_starts=None,
         max_retries=None, retry_on=None, retry_backoff=None,
         retry_backoff_max=None, retry_jitter=None, concurrency=None,
         rate_limit=None, keep=None, grouped=None):
    """Handler of ``<remotetask:task>``: see ``ITaskDirective``."""
    if not callable(function):
        raise config.ConfigurationError('%r is not callable' % (function,))
    for cls in retry_on or ():
        if not (isinstance(cls, type) and issubclass(cls, BaseException)):
            raise config.ConfigurationError(
                'retry_on: %r is not an exception class' % (cls,))
    try:
        component = SimpleTask(function, time_limit=time_limit,
                               max_starts=max_starts, max_retries=max_retries,
                               retry_on=retry_on, retry_backoff=retry_backoff,
                               retry_backoff_max=retry_backoff_max,
                               retry_jitter=retry_jitter,
                               concurrency=concurrency, rate_limit=rate_limit,
                               keep=keep, grouped=grouped)
    except ValueError as e:
        raise config.ConfigurationError('task %r: %s' % (name, e))
    utility(_context, provides=ITask, component=component, name=name)


def loadFile(path, context=None):
    """Load a ZCML file; the remotetask and zope.component directives are
    available in it without an include.  Returns the configuration
    context."""
    import remotetask
    if context is None:
        context = xmlconfig.file('meta.zcml', remotetask)
    return xmlconfig.file(os.path.abspath(path), context=context)


def loadString(text, context=None):
    """Load ZCML from a string (as ``loadFile``)."""
    import remotetask
    if context is None:
        context = xmlconfig.file('meta.zcml', remotetask)
    return xmlconfig.string(text, context=context)

"""ZCML: the ``<remotetask:task>`` directive and loading ZCML files.

``<remotetask:task name="echo" function="mypackage.tasks.echo" />``
registers ``SimpleTask(mypackage.tasks.echo)`` as the ``ITask`` utility
named ``echo``; the optional attributes ``time_limit``, ``max_starts``,
``max_retries`` and ``retry_backoff`` set its policy.  A task object of your
own is registered with the standard ``<utility>`` directive, providing
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
    retry_backoff = zope.schema.Float(title='First retry delay',
                                      required=False)


def task(_context, name, function, time_limit=None, max_starts=None,
         max_retries=None, retry_backoff=None):
    if not callable(function):
        raise config.ConfigurationError('%r is not callable' % (function,))
    component = SimpleTask(function, time_limit=time_limit,
                           max_starts=max_starts, max_retries=max_retries,
                           retry_backoff=retry_backoff)
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

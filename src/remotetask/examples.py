"""Example tasks, registered when this module is imported (``remotetask
worker --import remotetask.examples``) or by ``examples.zcml``
(``remotetask serve`` loads them when no tasks are given, so there is
something to try).

- ``echo``: returns its input;
- ``sum``: adds a list of numbers (fails cleanly on anything else);
- ``sleep``: sleeps ``input`` seconds (at most 3600), reporting progress;
- ``fail``: always fails, with ``input`` as the message.
"""
import time

from remotetask.interfaces import TaskError
from remotetask.job import currentJob


def echo(input):
    """Return the input."""
    return input


def sum_(input):
    """Add a list of numbers."""
    try:
        return sum(float(v) for v in input)
    except (TypeError, ValueError):
        raise TaskError('input must be a list of numbers, not %r' % (input,))


def sleep(input):
    """Sleep ``input`` seconds (at most an hour), reporting progress."""
    try:
        seconds = min(float(input or 1), 3600.0)
    except (TypeError, ValueError):
        raise TaskError('input must be a number of seconds, not %r'
                        % (input,))
    context = currentJob()
    steps = max(1, int(seconds * 10))
    for i in range(steps):
        if context is not None and context.cancelled:
            raise TaskError('stopped after %.1fs' % (i * seconds / steps))
        time.sleep(seconds / steps)
        if context is not None and (i + 1) % 10 == 0:
            context.progress((i + 1) / steps, 'slept %.1fs' % (
                (i + 1) * seconds / steps))
    return seconds


def fail(input):
    """Fail, with the input as the error message."""
    raise TaskError(str(input or 'this task always fails'))


def registerTasks():
    """Register the example tasks (as examples.zcml does); done on import,
    and again by ``--import`` after the component registry was cleaned."""
    import zope.component

    from remotetask.interfaces import ITask
    from remotetask.task import SimpleTask
    for name, func, policy in (('echo', echo, {}), ('sum', sum_, {}),
                               ('sleep', sleep, {'time_limit': 3700.0}),
                               ('fail', fail, {})):
        zope.component.provideUtility(SimpleTask(func, **policy), ITask,
                                      name=name)


registerTasks()

"""Tasks for the workflow tests and the bench, also in worker processes
(``remotetask worker --import remotetask.tests.workflowtasks``); importing
it registers ``processingtasks.record`` too.

``wf.then`` counts its committed runs in ``root['then_' + service name]``
(an ``OOBTree`` job id -> count, written in the job's own transaction),
so a test sees how often a ``then`` really fired, whatever ran and was
rolled back.
"""
import zope.component
from BTrees.OOBTree import OOBTree

from remotetask.interfaces import TaskError
from remotetask.job import currentJob
from remotetask.task import SimpleTask, TaskBase
from remotetask.tests import processingtasks


def thens(conn, service='tasks'):
    root = conn.root()
    key = 'then_' + service
    if key not in root:
        root[key] = OOBTree()
    return root[key]


class Then(TaskBase):
    """Counts its committed runs; returns the length of its input."""

    def __call__(self, service, jobid, input):
        fired = thens(service._p_jar, service.__name__)
        fired[jobid] = fired.get(jobid, 0) + 1
        return len(input)


def describe(input):
    return {'input': input, 'parents': currentJob().parentResults()}


def fail(input):
    raise TaskError('failed on purpose: %r' % (input,))


def register():
    processingtasks.register()
    provide = zope.component.provideUtility
    provide(SimpleTask(lambda n: n + 1), name='wf.inc')
    provide(SimpleTask(lambda n: n * 2), name='wf.double')
    provide(SimpleTask(describe), name='wf.describe')
    provide(SimpleTask(fail), name='wf.fail')
    provide(SimpleTask(lambda input: None), name='wf.noop')
    provide(Then(), name='wf.then')


register()

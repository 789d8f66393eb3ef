"""Acceptance checks of the core's contracts: lovely.remotetask's names and
signatures, interfaces that declare what the classes do, cron schedules
that are refused before anything is stored."""
import inspect
import re

import pytest
import zope.component
import zope.interface
from zope.interface.verify import verifyObject

import remotetask
from remotetask import interfaces
from remotetask.interfaces import InvalidScheduleError
from remotetask.job import CronJob, Job
from remotetask.processor import Processor
from remotetask.service import TaskService
from remotetask.task import SimpleTask
from remotetask.testing import checkConsistency


@pytest.fixture
def service():
    zope.component.provideUtility(SimpleTask(lambda input: input),
                                  name='echo')
    return TaskService()


# lovely.remotetask's service API: these names, in this order, with these
# defaults (later parameters are keyword extensions).
LOVELY = {
    'getAvailableTasks': [],
    'add': [('task', None), ('input', None), ('startLater', False)],
    'startJob': [('jobid', None)],
    'addCronJob': [('task', None), ('input', None), ('minute', ()),
                   ('hour', ()), ('dayOfMonth', ()), ('month', ()),
                   ('dayOfWeek', ()), ('delay', None)],
    'reschedule': [('jobid', None)],
    'cancel': [('jobid', None)],
    'clean': [('status', interfaces.CLEANABLE_STATUSES)],
    'getStatus': [('jobid', None)],
    'getResult': [('jobid', None)],
    'getError': [('jobid', None)],
    'hasJobsWaiting': [('now', None)],
    'claimNextJob': [('now', None)],
    'processNext': [('now', None), ('jobid', None)],
    'process': [('now', None)],
    'startProcessing': [],
    'stopProcessing': [],
    'isProcessing': [],
}


@pytest.mark.parametrize('name', sorted(LOVELY))
def test_lovely_api_names_and_signatures(name):
    params = list(inspect.signature(getattr(TaskService, name))
                  .parameters.values())[1:]
    expected = LOVELY[name]
    got = [(p.name, None if p.default is p.empty else p.default)
           for p in params[:len(expected)]]
    assert got == expected
    # Whatever comes after lovely's parameters is optional.
    for p in params[len(expected):]:
        assert p.default is not p.empty or p.kind is p.VAR_KEYWORD, p
    # ... and declared in the specification, with the same parameters.
    spec = interfaces.ITaskService[name].getSignatureInfo()
    assert spec['positional'][:len(expected)] == tuple(
        n for n, _ in expected)


def test_clean_default_is_every_final_status(service):
    assert set(interfaces.CLEANABLE_STATUSES) == set(
        interfaces.FINAL_STATUSES)


def _public(cls):
    return {name for name in dir(cls) if not name.startswith('_')
            and callable(getattr(cls, name))}


@pytest.mark.parametrize('cls, iface', [
    (TaskService, interfaces.ITaskService),
    (Job, interfaces.IJob),
    (CronJob, interfaces.ICronJob),
    (Processor, interfaces.IProcessor),
])
def test_interfaces_declare_every_public_method(cls, iface):
    """The specification does not drift from the code: every public
    method of a class is declared in its interface (verifyObject checks
    the other direction)."""
    import persistent
    inherited = _public(persistent.Persistent) | _public(object)
    undeclared = {name for name in _public(cls) - inherited
                  if name not in iface}
    assert undeclared == set()


def test_verify_every_class(service, tmp_path):
    verifyObject(interfaces.ITaskService, service)
    verifyObject(interfaces.IJob, service.jobs[service.add('echo')])
    verifyObject(interfaces.ICronJob,
                 service.jobs[service.addCronJob('echo', minute=(1,))])
    import ZODB
    db = ZODB.DB(None)
    try:
        verifyObject(interfaces.IProcessor, Processor(db))
    finally:
        db.close()


# -- cron schedules that can not work are refused before anything is stored ---

@pytest.mark.parametrize('schedule, message', [
    ({'dayOfMonth': (31,), 'month': (2,)},
     'the schedule dayOfMonth=(31,), month=(2,) never matches a date'),
    ({'expression': '0 0 30 2 *'},
     "the schedule '0 0 30 2 *' never matches a date"),
    ({'minute': '10'}, "minute must be a sequence of integers, not '10'"),
    ({'hour': 3}, 'hour must be a sequence of integers, not 3'),
    ({'minute': (1.5,)}, 'minute must be a sequence of integers'),
    ({'dayOfWeek': (7,)}, 'dayOfWeek 7 is out of range 0-6'),
    ({'delay': -1}, 'delay must be a positive'),
    ({'delay': 60, 'expression': '* * * * *'}, 'not both'),
    ({'minute': (1,), 'timezone': 'Europe/Vienna'}, 'a time zone applies'),
])
def test_bad_cron_schedules_store_nothing(service, schedule, message):
    service.add('echo', 'before', now=0)
    with pytest.raises(InvalidScheduleError, match=re.escape(message)):
        service.addCronJob('echo', 'x', now=0, **schedule)
    assert service.count() == len(service.jobs) == 1
    assert checkConsistency(service) == []


def test_leap_day_schedule_is_fine(service):
    jobid = service.addCronJob('echo', dayOfMonth=(29,), month=(2,), hour=(0,),
                               minute=(0,), now=0)
    # 1972-02-29 00:00 UTC
    assert service.jobs[jobid].eta == 68169600


def test_update_with_a_bad_schedule_keeps_the_old_one(service):
    jobid = service.addCronJob('echo', minute=(5,), now=0)
    job = service.jobs[jobid]
    with pytest.raises(InvalidScheduleError, match='never matches'):
        job.update(dayOfMonth=(30,), month=(2,))
    assert job.schedule()['minute'] == (5,)
    assert job.schedule()['month'] == ()
    assert job.timeOfNextCall(0) == 300


def test_package_exports():
    assert remotetask.TaskService is TaskService
    assert remotetask.SimpleTask is SimpleTask
    assert remotetask.TaskError is interfaces.TaskError
    assert remotetask.task.TaskError is interfaces.TaskError
    assert issubclass(remotetask.interfaces.ServiceNotStoredError,
                      interfaces.RemoteTaskError)
    assert zope.interface.implementedBy(TaskService).isOrExtends(
        interfaces.ITaskService)


# -- bad input ----------------------------------------------------------------


@pytest.mark.parametrize('kw', [{'eta': 'soon'}, {'delay': 'abc'}])
def test_a_bad_eta_or_delay_stores_nothing(service, kw):
    with pytest.raises(interfaces.InvalidInputError, match=next(iter(kw))):
        service.add('echo', 'x', **kw)
    assert len(service.jobs) == service.count() == 0
    assert checkConsistency(service) == []


@pytest.mark.parametrize('kw', [
    {'time_limit': 'abc'}, {'time_limit': -1}, {'max_starts': 0},
    {'max_starts': 'x'}, {'max_retries': -1}, {'max_retries': 1.5}])
def test_bad_job_policies_are_refused(service, kw):
    with pytest.raises(interfaces.InvalidInputError, match=next(iter(kw))):
        service.add('echo', 'x', **kw)
    assert len(service.jobs) == 0


def test_giving_both_delay_and_eta_is_an_input_error(service):
    with pytest.raises(interfaces.InvalidInputError, match='delay or eta'):
        service.add('echo', delay=1, eta=2)


@pytest.mark.parametrize('name', [None, 123, b'echo'])
def test_a_task_name_that_is_not_a_string(service, name):
    with pytest.raises(interfaces.UnknownTaskError, match=repr(name)):
        service.add(name)


def test_one_bad_job_does_not_stop_reaping(service):
    bad = service.add('echo', now=0)
    dead = service.add('echo', now=0)
    service.claim(now=0, lease=1, limit=2)
    service.jobs[bad].time_limit = 'abc'    # an old pickle, set by hand...
    assert dead in service.reap(now=10)
    assert service.getStatus(dead) == 'queued'


# -- ZCML: the whole retry policy ---------------------------------------------

def test_zcml_task_directive_takes_the_whole_policy(service):
    from remotetask import zcml
    zcml.loadString('''
    <configure xmlns:remotetask="http://namespaces.zope.org/remotetask">
      <remotetask:task name="fetch" function="remotetask.examples.echo"
          time_limit="60" max_starts="2" max_retries="4"
          retry_on="ConnectionError remotetask.interfaces.TimeLimitExceeded"
          retry_backoff="0.5" retry_backoff_max="30" retry_jitter="false" />
    </configure>''')
    task = service.getAvailableTasks()['fetch']
    assert task.retry_on == (ConnectionError, interfaces.TimeLimitExceeded)
    assert (task.time_limit, task.max_starts, task.max_retries,
            task.retry_backoff, task.retry_backoff_max, task.retry_jitter) \
        == (60.0, 2, 4, 0.5, 30.0, False)
    verifyObject(interfaces.ITask, task)


def test_zcml_retry_on_must_name_exception_classes():
    from zope.configuration.exceptions import ConfigurationError

    from remotetask import zcml
    with pytest.raises(ConfigurationError, match='not an exception class'):
        zcml.loadString('''
        <configure xmlns:remotetask="http://namespaces.zope.org/remotetask">
          <remotetask:task name="x" function="remotetask.examples.echo"
                           retry_on="remotetask.examples.echo" />
        </configure>''')

"""Workflows in the JSON API: ``POST /api/chains`` and ``POST /api/groups``
(``after`` on ``POST /api/jobs`` and the parents/children of a job's detail
are in ``api.py``).  See ``remotetask.workflows``.

A step is ``{"task": NAME, "input": VALUE}`` (input optional) or
``[NAME, VALUE]``; errors are the API's: 400 naming the step.
"""
from remotetask import workflows
from remotetask.interfaces import InvalidInputError
from remotetask.web.app import wakeAfterCommit
from remotetask.web.auth import MANAGE

STEP_FIELDS = ('task', 'input')


def includeme(config):
    config.add_route('api_chains', '/api/chains')
    config.add_route('api_groups', '/api/groups')
    config.add_view(addChain, route_name='api_chains', request_method='POST',
                    renderer='json', permission=MANAGE)
    config.add_view(addGroup, route_name='api_groups', request_method='POST',
                    renderer='json', permission=MANAGE)


def step(value, name):
    """A step as a ``(task, input)`` pair; a JSON object with the fields
    ``task`` and ``input`` (optional) or a two-item array.  Anything else is
    passed on for the service to refuse, naming the step."""
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(STEP_FIELDS))
        if unknown:
            raise InvalidInputError('%s: unknown field(s) %s; allowed: '
                                    'task, input'
                                    % (name, ', '.join(unknown)))
        if 'task' not in value:
            raise InvalidInputError('%s: missing field task' % name)
        return (value['task'], value.get('input'))
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return tuple(value)
    return value


def steps(value, what):
    if not isinstance(value, (list, tuple)):
        raise InvalidInputError(
            'the steps of a %s must be an array of steps ({"task": ..., '
            '"input": ...} or [task, input]), not %s'
            % (what, type(value).__name__))
    return [step(item, 'step %d of the %s' % (n, what))
            for n, item in enumerate(value, 1)]


def addChain(request):
    from remotetask.web.api import body, summary
    data = body(request, ('steps', 'after'), required=('steps',))
    service = request.service
    ids = service.chain(steps(data['steps'], 'chain'),
                        after=data.get('after'))
    wakeAfterCommit(request)
    request.response.status_int = 201
    return {'ids': ids, 'jobs': [summary(service.jobs[i]) for i in ids]}


def addGroup(request):
    from remotetask.web.api import body, summary
    data = body(request, ('steps', 'then', 'after'), required=('steps',))
    service = request.service
    then = data.get('then')
    if then is not None:
        then = step(then, 'the then of the group')
    ids, thenId = service.group(steps(data['steps'], 'group'), then=then,
                                after=data.get('after'))
    wakeAfterCommit(request)
    request.response.status_int = 201
    return {'ids': ids, 'then': thenId,
            'jobs': [summary(service.jobs[i]) for i in ids]
            + ([] if thenId is None else [summary(service.jobs[thenId])])}


def fields(service, job):
    """The workflow fields of a job's detail (``workflows.describe``)."""
    return workflows.describe(service, job)

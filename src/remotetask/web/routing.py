"""Routing and flow control in the JSON API and XML-RPC (see
``remotetask.routing``): queues, pauses, bulk actions, and the routing
fields of new jobs.

JSON API (under ``/api/``, described in ``/api/openapi.json``):

- ``GET /api/queues``: every queue (waiting, processing, paused, oldest
  due job's age, priorities in use), the pauses, the paused jobs' count;
- ``POST /api/pause`` and ``POST /api/resume`` with ``{"queue", "task"}``
  (both optional: neither pauses everything, or resumes every pause);
- ``POST /api/bulk/retry|purge|delete`` with ``{"queue", "task"}``
  (and ``"status"``, ``"before"`` for delete) and ``"dry_run": true`` to
  learn how many jobs it would change (the page's confirmation): one
  bounded step (``remotetask.bulk``) of at most ``"limit"`` jobs (default
  1000, at most 10000) in the request's transaction, answering ``"more"``
  and the ``"cursor"`` to send with the next request (the page repeats
  until ``more`` is false);
- ``POST /api/jobs`` and ``POST /api/cronjobs`` take ``queue`` and
  ``priority``; ``POST /api/jobs`` also ``unique_key`` (a key held by a
  live job answers 200 with that job, ``"existing": true``);
- ``GET /api/jobs?queue=Q&priority=N`` filters the list.

XML-RPC methods: ``add(task, input, options)`` (lovely's two arguments;
``options`` a struct of ``startLater``, ``delay``, ``queue``,
``priority``, ``unique_key``, or lovely's ``startLater`` boolean),
``addCronJob(..., options)`` (``queue``, ``priority``), ``queues()``,
``pause(filter)``, ``resume(filter)``, ``paused()``, ``retryAll(filter)``,
``purge(filter)``, ``deleteJobs(filter)`` (``filter`` a struct of
``queue``, ``task``, ``status``, ``before``, ``dry_run``, ``limit``).
The three bulk methods answer how many jobs they changed (an int, as
before); they run bounded steps, each in a transaction of its own, until
the walk ends or ``limit`` jobs were changed (see ``rpcBulk``).
"""
import xmlrpc.client

from transaction.interfaces import TransientError

from remotetask import bulk as bulkmod
from remotetask import db as dbmod
from remotetask import routing
from remotetask.web.api import bad, body, flag, jsonable, text, timestamp
from remotetask.web.app import wakeAfterCommit
from remotetask.web.auth import MANAGE, VIEW

#: The fields of POST /api/jobs and /api/cronjobs this module reads.
JOB_FIELDS = ('queue', 'priority', 'unique_key')
CRON_FIELDS = ('queue', 'priority')
FILTER_FIELDS = ('queue', 'task')


def includeme(config):
    for name, pattern in (('api_queues', '/api/queues'),
                          ('api_pause', '/api/pause'),
                          ('api_resume', '/api/resume')):
        config.add_route(name, pattern)
    config.add_view(queues, route_name='api_queues', request_method='GET',
                    renderer='json', permission=VIEW)
    config.add_view(pause, route_name='api_pause', request_method='POST',
                    renderer='json', permission=MANAGE)
    config.add_view(resume, route_name='api_resume', request_method='POST',
                    renderer='json', permission=MANAGE)
    for action in BULK_FIELDS:
        config.add_route('api_bulk_' + action, '/api/bulk/' + action)
        config.add_view(bulk, route_name='api_bulk_' + action,
                        request_method='POST', renderer='json',
                        permission=MANAGE)


# -- Fields of new jobs, and list filters ---------------------------------------

def jobOptions(data, fields=JOB_FIELDS):
    """The routing keyword arguments of ``service.add`` in ``data`` (a
    JSON object); the service checks their values (a clear 400)."""
    kw = {}
    for name in fields:
        value = data.get(name)
        if value is not None:
            kw[name] = value
    return kw


def listFilter(request):
    """A function ``job -> bool`` for the ``queue`` and ``priority``
    parameters of ``GET /api/jobs``, or None."""
    queue = request.params.get('queue') or None
    raw = request.params.get('priority')
    priority = None
    if raw not in (None, ''):
        try:
            priority = routing.checkPriority(int(raw))
        except ValueError:
            raise bad('priority must be an integer between %d and %d, '
                      'not %r' % (routing.MIN_PRIORITY, routing.MAX_PRIORITY,
                                  raw))
    if queue is None and priority is None:
        return None
    if queue is not None:
        routing.checkQueue(queue)

    def match(job):
        return ((queue is None or job.queue == queue)
                and (priority is None or job.priority == priority))
    return match


# -- Views ----------------------------------------------------------------------

def queuesInfo(service):
    return {'queues': jsonable(service.queues()),
            'pauses': jsonable(service.paused()),
            'paused_jobs': service.pausedCount()}


def queues(request):
    return queuesInfo(request.service)


def _filter(data):
    queue, task = text(data, 'queue'), text(data, 'task')
    return routing.checkFilter(queue or None, task or None)


def pause(request):
    data = body(request, FILTER_FIELDS)
    queue, task = _filter(data)
    changed = request.service.pause(queue=queue, task=task)
    result = queuesInfo(request.service)
    result['changed'] = changed
    return result


def resume(request):
    data = body(request, FILTER_FIELDS)
    queue, task = _filter(data)
    removed = request.service.resume(queue=queue, task=task)
    wakeAfterCommit(request)
    result = queuesInfo(request.service)
    result['removed'] = removed
    return result


STEP_FIELDS = ('dry_run', 'limit', 'cursor')
BULK_FIELDS = {'retry': FILTER_FIELDS + STEP_FIELDS,
               'purge': FILTER_FIELDS + STEP_FIELDS,
               'delete': FILTER_FIELDS + ('status', 'before') + STEP_FIELDS}


def stepLimit(data):
    """The ``limit`` of a step request: ``bulk.BATCH`` if not given, else
    an integer from 1 to ``bulk.MAX_LIMIT`` (a 400 otherwise)."""
    limit = data.get('limit')
    return bulkmod.BATCH if limit is None else bulkmod.checkLimit(limit)


def _statusField(data):
    status = data.get('status')
    if status is not None and not (
            isinstance(status, str) or isinstance(status, list)
            and all(isinstance(s, str) for s in status)):
        raise bad('status must be a status or a list of statuses')
    return status


def bulk(request):
    """One bounded step of a bulk action (``remotetask.bulk``), in the
    request's transaction."""
    action = request.matched_route.name[len('api_bulk_'):]
    data = body(request, BULK_FIELDS[action])
    queue, task = _filter(data)
    dry = flag(data, 'dry_run')
    kw = dict(queue=queue, task=task, dry_run=dry, limit=stepLimit(data),
              cursor=data.get('cursor'))
    if action == 'delete':
        kw.update(status=_statusField(data),
                  before=timestamp(data, 'before'))
    step = bulkmod.STEPS[action](request.service, **kw)
    if action == 'retry' and step.count and not dry:
        wakeAfterCommit(request)
    return {'action': action, 'count': step.count, 'dry_run': dry,
            'queue': queue, 'task': task, 'more': step.more,
            'cursor': step.cursor}


# -- XML-RPC --------------------------------------------------------------------

#: XML-RPC fault code for wrong arguments (``xmlrpc.BAD_ARGUMENTS``).
BAD_ARGUMENTS = -32602
#: ... and for "the database was busy: try again" (``xmlrpc.TRY_AGAIN``).
TRY_AGAIN = 7
ADD_OPTIONS = ('startLater', 'delay', 'queue', 'priority', 'unique_key',
               'after')
FILTER_OPTIONS = ('queue', 'task', 'status', 'before', 'dry_run', 'limit')


def options(value, allowed, what='options'):
    """An XML-RPC options struct, checked against ``allowed`` keys."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise xmlrpc.client.Fault(BAD_ARGUMENTS, '%s must be a struct, not %r'
                                  % (what, value))
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise xmlrpc.client.Fault(
            BAD_ARGUMENTS, 'unknown %s %s; allowed: %s'
            % (what, ', '.join(map(repr, unknown)), ', '.join(allowed)))
    return dict(value)


def addOptions(value):
    """``add``'s third argument: lovely's ``startLater`` flag, or a
    struct of ``ADD_OPTIONS``; keyword arguments of ``service.add``."""
    if isinstance(value, bool):
        return {'startLater': value}
    kw = options(value, ADD_OPTIONS)
    if 'startLater' in kw:
        kw['startLater'] = bool(kw['startLater'])
    return kw


def _filterKw(value, statuses=False):
    kw = options(value, FILTER_OPTIONS if statuses
                 else ('queue', 'task', 'dry_run', 'limit'), 'filter')
    kw['dry_run'] = bool(kw.get('dry_run', False))
    return kw


def rpcBulk(request, action, filter, statuses=False):
    """A bulk action over XML-RPC: bounded steps (``bulk.BATCH`` jobs),
    each in a transaction of its own (not the request's), until the walk
    ends or the filter's ``limit`` jobs were changed; how many.

    Why not the request's one transaction: on many jobs that is one
    large transaction that conflicts with every worker for its length,
    and a conflict would do it all again; the answer is an int (the
    contract of these methods), so the call can not hand a cursor back
    and ask to be called again.  Jobs changed by the steps that committed
    stay changed if a later step fails (a fault 7 says how many)."""
    kw = _filterKw(filter, statuses)
    limit = kw.pop('limit', None)
    if limit is not None:
        bulkmod.checkLimit(limit, maximum=float('inf'))
    web = request.registry.remotetask
    runner = dbmod.ServiceRunner(web.db, web.service_name)
    done = []
    processor = web.processor

    def committed(step):
        done.append(step.count)
        if action == 'retry' and step.count and not kw['dry_run'] \
                and processor is not None:
            processor.wake()
    try:
        return bulkmod.run(runner, bulkmod.STEPS[action], limit=limit,
                           committed=committed, **kw)
    except TransientError as e:
        # (Not pyramid_retry: the steps that committed are done.)
        raise xmlrpc.client.Fault(
            TRY_AGAIN, 'the database was busy (%s) after %d jobs were '
            'changed; call again to go on' % (type(e).__name__, sum(done)))


def rpcQueues(request):
    """Every queue: waiting, processing, paused, oldest_age, priorities;
    with the pauses and the paused jobs' count."""
    return jsonable(queuesInfo(request.service))


def rpcPause(request, filter=None):
    """Pause a queue and/or a task ({'queue': Q, 'task': T}; neither:
    everything); False if it was paused already."""
    kw = options(filter, ('queue', 'task'), 'filter')
    return request.service.pause(**kw)


def rpcResume(request, filter=None):
    """Remove the pauses that match ({'queue': Q, 'task': T}; neither:
    every pause); return how many."""
    kw = options(filter, ('queue', 'task'), 'filter')
    removed = request.service.resume(**kw)
    wakeAfterCommit(request)
    return removed


def rpcPaused(request):
    """The pauses: [{'queue': Q or nil, 'task': T or nil, 'since': t}]."""
    return jsonable(request.service.paused())


def rpcRetryAll(request, filter=None):
    """Queue again every failed job of {'queue', 'task'}; how many
    ('dry_run': true only counts; 'limit': at most that many)."""
    return rpcBulk(request, 'retry', filter)


def rpcPurge(request, filter=None):
    """Cancel every queued, delayed, start-later and deferred job of
    {'queue', 'task'}; how many ('dry_run': true only counts; 'limit': at
    most that many)."""
    return rpcBulk(request, 'purge', filter)


def rpcDeleteJobs(request, filter=None):
    """Delete the jobs of {'status', 'queue', 'task', 'before'} (never
    processing ones); how many ('dry_run': true only counts; 'limit': at
    most that many)."""
    return rpcBulk(request, 'delete', filter, statuses=True)


#: XML-RPC methods: name -> (permission, function).
METHODS = {
    'queues': (VIEW, rpcQueues),
    'pause': (MANAGE, rpcPause),
    'resume': (MANAGE, rpcResume),
    'paused': (VIEW, rpcPaused),
    'retryAll': (MANAGE, rpcRetryAll),
    'purge': (MANAGE, rpcPurge),
    'deleteJobs': (MANAGE, rpcDeleteJobs),
}


# -- OpenAPI ----------------------------------------------------------------------

def openapiPaths(op, json, ref, errors=()):
    """The routing paths of ``/api/openapi.json`` (``op``, ``json`` and
    ``ref`` are ``openapi``'s helpers)."""
    filt = {'type': 'object', 'additionalProperties': False, 'properties': {
        'queue': {'type': 'string'}, 'task': {'type': 'string'}}}
    def bulkBody(extra):
        props = dict(filt['properties'], dry_run={'type': 'boolean'},
                     limit=ref('StepLimit'), cursor=ref('Cursor'))
        props.update(extra)
        return {'type': 'object', 'additionalProperties': False,
                'properties': props}
    counted = json({'type': 'object', 'properties': {
        'action': {'type': 'string'}, 'count': {'type': 'integer'},
        'dry_run': {'type': 'boolean'}, 'more': {'type': 'boolean'},
        'cursor': ref('Cursor')}})
    step = (': one bounded step (at most limit jobs, 10 x limit looked '
            'at) in one transaction; repeat with the cursor while more is '
            'true')
    info = json(ref('Queues'))
    return {
        '/api/queues': {'get': op(
            'The queues: waiting, processing, paused, oldest due age',
            info, tag='queues')},
        '/api/pause': {'post': op(
            'Pause a queue, a task, both, or (neither) everything', info,
            400, 403, body=filt, tag='queues')},
        '/api/resume': {'post': op(
            'Remove the pauses that match (neither: all)', info, 400, 403,
            body=filt, tag='queues')},
        '/api/bulk/retry': {'post': op(
            'Retry the failed jobs of a queue and/or task' + step, counted, 400,
            403, body=bulkBody({}), tag='queues')},
        '/api/bulk/purge': {'post': op(
            'Cancel the waiting jobs (not cron jobs) of a queue and/or '
            'task' + step, counted, 400, 403, body=bulkBody({}), tag='queues')},
        '/api/bulk/delete': {'post': op(
            'Delete the jobs that match (never processing ones)' + step,
            counted,
            400, 403, 409, body=bulkBody({
                'status': {'oneOf': [ref('Status'), {
                    'type': 'array', 'items': ref('Status')}]},
                'before': {'type': 'number'}}), tag='queues')},
    }


SCHEMAS = {
    'StepLimit': {'type': 'integer', 'minimum': 1,
                  'maximum': bulkmod.MAX_LIMIT, 'default': bulkmod.BATCH,
                  'description': 'jobs acted on (at most) in this step'},
    'Cursor': {'type': 'object', 'nullable': True,
               'description': 'where the previous step stopped, per '
               'status (the last job id looked at; null: walked to its '
               'end); send it back as it came',
               'additionalProperties': {'type': 'integer', 'minimum': 0,
                                        'nullable': True}},
    'Queues': {'type': 'object', 'properties': {
        'queues': {'type': 'array', 'items': {
            'type': 'object', 'properties': {
                'queue': {'type': 'string'}, 'waiting': {'type': 'integer'},
                'processing': {'type': 'integer'},
                'paused': {'type': 'boolean'},
                'oldest_due': {'type': 'number', 'nullable': True},
                'oldest_age': {'type': 'number', 'nullable': True},
                'priorities': {'type': 'array',
                               'items': {'type': 'integer'}}}}},
        'pauses': {'type': 'array', 'items': {'type': 'object'}},
        'paused_jobs': {'type': 'integer'}}},
}

"""The JSON API under ``/api/``, described by ``/api/openapi.json``
(``openapi.py``).

Job lists never load more jobs than they show: they walk the id-ordered
BTree of all jobs, or the status or task index (``service.jobIds()``), from
a cursor (the last id of the previous page), ``limit`` keys at a time; a
descending page uses ``maxKey()`` lookups, O(log n) each.  With both a
status and a task, one index is walked and each id checked against the
other; a request then looks at no more than ``SCAN_LIMIT`` ids and hands
back a cursor to go on from (a page may have fewer than ``limit`` jobs and
still a ``next``).  Sorting by status or by task walks the status or task
indexes one after the other, each as above, with a ``GROUP:ID`` cursor.
"""
import datetime
import json
import logging
import threading

from pyramid.httpexceptions import (
    HTTPBadRequest, HTTPConflict, HTTPError, HTTPNotFound,
    HTTPUnsupportedMediaType)
from transaction.interfaces import TransientError

from remotetask import health, interfaces
from remotetask.interfaces import (
    InvalidStatusError, JobNotFoundError, RemoteTaskError)
from remotetask.job import CronJob
from remotetask.numbers import checkNumber, isInt
from remotetask.service import checkPicklable
from remotetask.web.app import allowedMethods, httpMessage, wakeAfterCommit
from remotetask.web.auth import MANAGE, VIEW
from remotetask.web import workflows
from remotetask.web.openapi import document

log = logging.getLogger('remotetask.web')

MAX_LIMIT = 200
DEFAULT_LIMIT = 50
SCAN_LIMIT = 20000
SCHEDULE_FIELDS = ('minute', 'hour', 'dayOfMonth', 'month', 'dayOfWeek',
                   'delay', 'expression', 'timezone', 'interval')


def includeme(config):
    routes = [
        ('api_index', '/api/'),
        ('api_openapi', '/api/openapi.json'),
        ('api_me', '/api/me'),
        ('api_tasks', '/api/tasks'),
        ('api_counts', '/api/counts'),
        ('api_jobs', '/api/jobs'),
        ('api_job', '/api/jobs/{id:\\d{1,18}}'),
        ('api_job_action', '/api/jobs/{id:\\d{1,18}}/{action}'),
        ('api_cronjobs', '/api/cronjobs'),
        ('api_cronjob', '/api/cronjobs/{id:\\d{1,18}}'),
        ('api_clean', '/api/clean'),
        ('api_processing', '/api/processing'),
        ('api_workers', '/api/workers'),
    ]
    for name, pattern in routes:
        config.add_route(name, pattern)
    view = config.add_view
    view(index, route_name='api_index', request_method='GET',
         renderer='json', permission=VIEW)
    view(openapi, route_name='api_openapi', renderer='json', permission=VIEW)
    view(me, route_name='api_me', renderer='json', permission=VIEW)
    view(tasks, route_name='api_tasks', renderer='json', permission=VIEW)
    view(counts, route_name='api_counts', renderer='json', permission=VIEW)
    view(listJobs, route_name='api_jobs', request_method='GET',
         renderer='json', permission=VIEW)
    view(addJob, route_name='api_jobs', request_method='POST',
         renderer='json', permission=MANAGE)
    view(showJob, route_name='api_job', request_method='GET',
         renderer='json', permission=VIEW)
    view(deleteJob, route_name='api_job', request_method='DELETE',
         renderer='json', permission=MANAGE)
    view(jobAction, route_name='api_job_action', request_method='POST',
         renderer='json', permission=MANAGE)
    view(addCronJob, route_name='api_cronjobs', request_method='POST',
         renderer='json', permission=MANAGE)
    view(editCronJob, route_name='api_cronjob', request_method='PUT',
         renderer='json', permission=MANAGE)
    view(clean, route_name='api_clean', request_method='POST',
         renderer='json', permission=MANAGE)
    view(processing, route_name='api_processing', request_method='GET',
         renderer='json', permission=VIEW)
    view(setProcessing, route_name='api_processing', request_method='POST',
         renderer='json', permission=MANAGE)
    view(workers, route_name='api_workers', request_method='GET',
         renderer='json', permission=VIEW)
    config.include(workflows)
    # Queues, pauses, bulk actions (remotetask.web.routing).
    config.include('remotetask.web.routing')
    for context in (RemoteTaskError, ValueError, HTTPError, TransientError,
                    Exception):
        config.add_exception_view(apiError, context=context,
                                  path_info=r'^/api/', renderer='json')


# -- Values -------------------------------------------------------------------

def jsonable(value):
    """``value`` if JSON can hold it (NaN and infinities it can not), else
    its repr."""
    try:
        json.dumps(value, allow_nan=False)
        return value
    except (TypeError, ValueError, RecursionError):
        return repr(value)


def summary(job):
    info = job.info()
    info['progress'] = list(info['progress'])
    return {key: jsonable(value) for key, value in info.items()}


def detail(job, service=None):
    info = summary(job)
    if service is not None:
        info.update(jsonable(workflows.fields(service, job)))
    info.update(
        input=jsonable(job.input), result=jsonable(job.output),
        traceback=job.traceback, attempts=jsonable(list(job.attempts)),
        meta=jsonable(dict(job.meta or {})),
        lease_expires=jsonable(job.lease_expires),
        time_limit=jsonable(job.time_limit),
        max_retries=jsonable(job.max_retries),
        max_starts=jsonable(job.max_starts))
    return info


def bad(message):
    return HTTPBadRequest(message)


def body(request, allowed, required=()):
    """The JSON object in the request body, checked against the fields
    ``allowed`` and ``required``: 415 if the body is not
    ``application/json``, 400 if it is not a JSON object, names a field
    not ``allowed``, or holds a string that can not be encoded (a lone
    surrogate such as ``"\\ud800"``: it could be stored but never sent
    back)."""
    if not request.body:
        data = {}
    elif request.content_type != 'application/json':
        raise HTTPUnsupportedMediaType(
            'the request body must be application/json, not %s'
            % (request.content_type or 'without a Content-Type'))
    else:
        try:
            data = json.loads(request.body.decode('utf-8'),
                              parse_constant=_notJSON)
        except (ValueError, UnicodeDecodeError) as e:
            raise bad('the request body is not JSON: %s' % e)
        except RecursionError:
            raise bad('the request body is nested too deeply')
        checkEncodable(request.body, data)
    if not isinstance(data, dict):
        raise bad('the request body must be a JSON object, not %s'
                  % type(data).__name__)
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise bad('unknown field(s) %s; allowed: %s'
                  % (', '.join(unknown), ', '.join(allowed)))
    missing = [name for name in required if name not in data]
    if missing:
        raise bad('missing field(s): %s' % ', '.join(missing))
    return data


def _notJSON(constant):
    raise ValueError('%s is not JSON' % constant)


def checkEncodable(raw, data):
    """400 if the JSON ``data`` (parsed from ``raw``) holds a lone
    surrogate (only a ``\\uD8xx`` escape can bring one in)."""
    if b'\\ud' not in raw.lower():
        return
    try:
        json.dumps(data, ensure_ascii=False).encode('utf-8')
    except UnicodeEncodeError as e:
        raise bad('the request body holds a string that can not be '
                  'encoded as UTF-8 (a lone surrogate, %s): %s'
                  % (repr(e.object[e.start:e.end]), e.reason))


#: Integers (counts) must fit 64 bits, for clients in other languages.
MAX_INT = 2 ** 63 - 1


def number(data, name, minimum=None, integer=False):
    """The finite number (an integer if ``integer``) in field ``name``, or
    None; 400 naming the field if it is anything else (``checkNumber``)."""
    value = data.get(name)
    if value is None:
        return None
    try:
        return checkNumber(name, value, minimum, integer=integer,
                           integral=True, high=MAX_INT if integer else None)
    except ValueError as e:
        raise bad(str(e))


def timestamp(data, name):
    """Epoch seconds, or an ISO 8601 time with a UTC offset."""
    value = data.get(name)
    if isinstance(value, str):
        try:
            when = datetime.datetime.fromisoformat(value.replace('Z',
                                                                 '+00:00'))
        except ValueError:
            raise bad('%s must be epoch seconds or an ISO 8601 time, not %r'
                      % (name, value))
        if when.tzinfo is None:
            raise bad('%s must give its UTC offset (e.g. "Z"): %r'
                      % (name, value))
        return when.timestamp()
    return number(data, name)


def flag(data, name):
    value = data.get(name, False)
    if not isinstance(value, bool):
        raise bad('%s must be true or false, not %s' % (name,
                                                        json.dumps(value)))
    return value


def text(data, name):
    value = data.get(name)
    if value is not None and not isinstance(value, str):
        raise bad('%s must be a string, not %s' % (name, json.dumps(value)))
    return value


def intParam(request, name, default, low, high):
    raw = request.params.get(name)
    if raw in (None, ''):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad('%s must be an integer, not %r' % (name, raw))
    if not low <= value <= high:
        raise bad('%s must be between %d and %d, not %d'
                  % (name, low, high, value))
    return value


def getJob(request):
    return request.service._job(int(request.matchdict['id']))


# -- Views --------------------------------------------------------------------

def openapi(request):
    return document(request.application_url,
                    tasks=sorted(request.service.getAvailableTasks()))


def index(request):
    """GET /api/: what the API offers (from the OpenAPI document)."""
    doc = document(request.application_url)
    base = request.application_url.rstrip('/')
    endpoints = [{'method': method.upper(), 'path': path,
                  'summary': op['summary']}
                 for path, ops in sorted(doc['paths'].items())
                 for method, op in sorted(ops.items())]
    from remotetask.version import VERSION
    return {'name': 'remotetask', 'version': VERSION,
            'api_version': doc['info']['version'],
            'openapi': base + '/api/openapi.json',
            'xmlrpc': base + '/RPC2', 'page': base + '/',
            'metrics': base + '/metrics', 'endpoints': endpoints}


def me(request):
    identity = request.identity
    return {'name': identity['name'], 'role': identity['role'],
            'via': identity['via'],
            'anonymous': request.registry.remotetask.anonymous,
            'service': request.registry.remotetask.service_name,
            'csrf_token': request.session.get_csrf_token()}


def tasks(request):
    found = []
    for name, task in sorted(request.service.getAvailableTasks().items()):
        found.append({'name': name,
                      'doc': (getattr(getattr(task, 'func', task), '__doc__',
                                      None) or '').strip() or None,
                      'time_limit': getattr(task, 'time_limit', None),
                      'max_retries': getattr(task, 'max_retries', None),
                      'max_starts': getattr(task, 'max_starts', None)})
    return {'tasks': jsonable(found)}


def counts(request):
    service = request.service
    counted = service.counts()
    oldest = service.oldestWaiting()
    return {'counts': counted, 'total': sum(counted.values()),
            'paused': service.pausedCount(),
            'oldest_due': None if oldest is None else oldest[0],
            'processing': processorState(request)}


def workers(request):
    """The live workers (the registry) and the waiting jobs no live
    worker runs."""
    from remotetask import registry
    service = request.service
    local = request.registry.remotetask.processor
    names = local.taskNames() if local is not None and local.running else ()
    unserved = registry.unserved(service, names)
    return {'workers': jsonable(service.workers()),
            'unserved': [{'task': task, 'waiting': n}
                         for task, n in sorted(unserved.items())],
            'warnings': registry.describeUnserved(unserved)}


def _ascending(tree, cursor):
    if cursor is None:
        return iter(tree.keys())
    return iter(tree.keys(min=cursor, excludemin=True))


def _descending(tree, cursor):
    key = cursor
    while True:
        try:
            key = tree.maxKey() if key is None else tree.maxKey(key - 1)
        except ValueError:
            return
        yield key


SORTS = ('-id', 'id', 'status', '-status', 'task', '-task')


def listJobs(request):
    """See the module documentation and ``openapi.py``."""
    service = request.service
    status = request.params.get('status') or None
    if status is not None and status not in interfaces.STATUSES:
        raise bad('unknown status %r; statuses: %s'
                  % (status, ', '.join(interfaces.STATUSES)))
    task = request.params.get('task') or None
    sort = request.params.get('sort') or '-id'
    if sort not in SORTS:
        raise bad('sort must be one of %s, not %r' % (', '.join(SORTS),
                                                      sort))
    limit = intParam(request, 'limit', DEFAULT_LIMIT, 1, MAX_LIMIT)
    from remotetask.web.routing import listFilter
    routed = listFilter(request)    # ?queue= and ?priority=: job by job
    groups, total = _groups(service, sort, status, task)
    if routed is not None:
        total = None
    group, cursor = _cursor(request, sort, groups)
    walk = _descending if sort.startswith('-') else _ascending
    jobs, scanned, last, more = [], 0, None, False
    for key, tree, check in groups[group:]:
        for jobid in walk(tree, cursor):
            if len(jobs) >= limit or scanned >= SCAN_LIMIT:
                more = True
                break
            last = jobid if key is None else '%s:%d' % (key, jobid)
            if check is not None or routed is not None:
                scanned += 1
                if check is not None and jobid not in check:
                    continue
            job = service.jobs[jobid]
            if routed is not None and not routed(job):
                continue
            jobs.append(summary(job))
        if more:
            break
        cursor = None
    return {'jobs': jobs, 'total': total, 'next': last if more else None,
            'scanned': scanned, 'sort': sort, 'status': status,
            'task': task, 'limit': limit,
            'queue': request.params.get('queue') or None,
            'priority': request.params.get('priority') or None}


def _groups(service, sort, status, task):
    """``([(group, ids to walk, ids to check each against or None)],
    total or None)`` in the order of ``sort``.

    Sorting by id walks one tree (group None).  Sorting by status walks the
    status indexes one after the other (in the order of ``STATUSES``, the
    life of a job), by task the task indexes (by task name); each by id.
    The other filter, if any, is checked id by id against its index.
    """
    field = sort.lstrip('-')
    if field == 'id':
        tree, check, total = _sources(service, status, task)
        groups = [(None, tree, check)]
    elif field == 'status':
        byTask = None if task is None else service.jobIds(task=task)
        groups = [(name, service.jobIds(name), byTask) for name in
                  ([status] if status else interfaces.STATUSES)]
        total = service.count(status) if task is None else None
    else:
        byStatus = None if status is None else service.jobIds(status)
        # The names of the tasks that have jobs: the keys of the service's
        # task index (it has no public method for them yet).
        names = [task] if task else list(service.taskNames())
        groups = [(name, service.jobIds(task=name), byStatus)
                  for name in names]
        total = service.count(status) if task is None else None
    if sort.startswith('-'):
        groups.reverse()
    return groups, total


def _cursor(request, sort, groups):
    """``(index of the group to start in, id to go on from or None)``:
    the cursor is the ``next`` of the previous page, a job id when sorting
    by id, else ``GROUP:ID``."""
    raw = request.params.get('cursor')
    if raw in (None, ''):
        return 0, None
    if sort.lstrip('-') == 'id':
        return 0, intParam(request, 'cursor', None, 0, 2 ** 63 - 1)
    key, _, jobid = raw.rpartition(':')
    keys = [group[0] for group in groups]
    if key not in keys or not jobid.isdigit() \
            or int(jobid) > 2 ** 63 - 1:
        raise bad('cursor must be the "next" of the previous page '
                  '(GROUP:ID when sorting by %s), not %r'
                  % (sort.lstrip('-'), raw))
    return keys.index(key), int(jobid)


def _sources(service, status, task):
    """``(ids to walk, ids to check each against or None, total or None)``.

    One filter: its index.  Both: walk the status index if it is small
    enough to be walked in one request, else the task index, and check
    each id against the other index (ids only: no job is loaded that is
    not shown).
    """
    if task is None:
        tree = service.jobs if status is None else service.jobIds(status)
        return tree, None, service.count(status)
    byTask = service.jobIds(task=task)
    if status is None:
        return byTask, None, None
    if service.count(status) <= SCAN_LIMIT:
        return service.jobIds(status), byTask, None
    return byTask, service.jobIds(status), None


JOB_FIELDS = ('task', 'input', 'delay', 'eta', 'startLater', 'time_limit',
              'max_retries', 'max_starts', 'after', 'queue', 'priority',
              'unique_key')


def addJob(request):
    data = body(request, JOB_FIELDS, required=('task',))
    task = text(data, 'task')
    delay = number(data, 'delay', minimum=0)
    eta = timestamp(data, 'eta')
    if delay is not None and eta is not None:
        raise bad('give either delay or eta, not both')
    max_retries = number(data, 'max_retries', minimum=0, integer=True)
    max_starts = number(data, 'max_starts', minimum=1, integer=True)
    from remotetask import routing
    from remotetask.web.routing import jobOptions
    routed = jobOptions(data)
    key = routed.get('unique_key')
    # (The key is checked first: a key that is no string, looked up in
    # the keys' BTree, would be a TypeError, a 500.)
    held = None if key is None else routing.existing(
        request.service, routing.checkUniqueKey(key))
    if held is not None:
        # Nothing added: the job holding the key (the service checked
        # nothing else).
        info = detail(request.service.jobs[held])
        info['existing'] = True
        return info
    jobid = request.service.add(
        task, data.get('input'), startLater=flag(data, 'startLater'),
        delay=delay, eta=eta, time_limit=number(data, 'time_limit', 0),
        max_retries=None if max_retries is None else int(max_retries),
        max_starts=None if max_starts is None else int(max_starts),
        after=data.get('after'), **routed)
    wakeAfterCommit(request)
    request.response.status_int = 201
    return detail(request.service.jobs[jobid], request.service)


def showJob(request):
    return detail(getJob(request), request.service)


def deleteJob(request):
    job = getJob(request)
    request.service.delete(job.id)
    return {'deleted': job.id}


ACTIONS = ('cancel', 'retry', 'start', 'reschedule')


def jobAction(request):
    action = request.matchdict['action']
    service = request.service
    job = getJob(request)
    body(request, ())
    if action == 'cancel':
        service.cancel(job.id)
        if job.status == interfaces.PROCESSING:
            # Asked: the job ends cancelled when its run returns.
            request.response.status_int = 202
    elif action == 'retry':
        service.retry(job.id)
    elif action == 'start':
        if not service.startJob(job.id):
            raise InvalidStatusError('can not start job %s: it is %r (only '
                                     "'start later')" % (job.id, job.status))
    elif action == 'reschedule':
        service.reschedule(job.id)
    else:
        raise bad('unknown action %r; actions: %s'
                  % (action, ', '.join(ACTIONS)))
    wakeAfterCommit(request)
    return detail(job, service)


def schedule(data):
    kw = {}
    for name in SCHEDULE_FIELDS[:5]:
        value = data.get(name)
        if value is None:
            value = []
        if not isinstance(value, list) or not all(map(isInt, value)):
            raise bad('%s must be a list of integers, not %s'
                      % (name, json.dumps(value)))
        kw[name] = tuple(value)
    kw['delay'] = number(data, 'delay')
    kw['interval'] = number(data, 'interval')
    kw['expression'] = text(data, 'expression') or None
    kw['timezone'] = text(data, 'timezone') or None
    return kw


def addCronJob(request):
    from remotetask.web.routing import CRON_FIELDS, jobOptions
    data = body(request, ('task', 'input') + SCHEDULE_FIELDS + CRON_FIELDS,
                required=('task',))
    jobid = request.service.addCronJob(text(data, 'task'), data.get('input'),
                                       **schedule(data),
                                       **jobOptions(data, CRON_FIELDS))
    wakeAfterCommit(request)
    request.response.status_int = 201
    return detail(request.service.jobs[jobid])


def editCronJob(request):
    """Replace the schedule (and the input, if given) of a cron job and
    put it back in the queue at its next call time (unless it is running:
    the new schedule then applies after this run)."""
    data = body(request, ('input',) + SCHEDULE_FIELDS)
    job = getJob(request)
    if not isinstance(job, CronJob):
        raise InvalidStatusError('job %s is not a cron job' % job.id)
    job.update(**schedule(data))
    if 'input' in data:
        checkPicklable(data['input'])
        job.input = data['input']
    if job.status != interfaces.PROCESSING:
        request.service.reschedule(job.id)
    wakeAfterCommit(request)
    return detail(job)


def clean(request):
    """One bounded step of ``retention.clean`` (at most ``limit`` jobs
    removed, ``SCAN_FACTOR`` x ``limit`` looked at per status) in the
    request's transaction: ``removed``, ``more`` and the ``cursor`` to
    send with the next request (the page repeats until ``more`` is
    false).  ``service.clean()`` would be one transaction however many
    jobs."""
    from remotetask import bulk, retention
    from remotetask.web.routing import stepLimit
    data = body(request, ('status', 'before', 'limit', 'cursor'))
    statuses = data.get('status', list(interfaces.CLEANABLE_STATUSES))
    if isinstance(statuses, str):
        statuses = [statuses]
    if not isinstance(statuses, list) or not all(
            isinstance(s, str) for s in statuses):
        raise bad('status must be a status or a list of statuses')
    unknown = [s for s in statuses if s not in interfaces.STATUSES]
    if unknown:
        raise bad('unknown status(es) %s; statuses: %s' % (
            ', '.join(map(repr, unknown)), ', '.join(interfaces.STATUSES)))
    limit = stepLimit(data)
    cursor = bulk.checkCursor(data.get('cursor'), statuses)
    removed, cursor, more = retention.clean(
        request.service, tuple(statuses), before=timestamp(data, 'before'),
        limit=limit, scan=limit * bulk.SCAN_FACTOR, cursors=cursor)
    return {'removed': len(removed), 'more': more, 'cursor': cursor}


# -- Processing ---------------------------------------------------------------

def processorState(request):
    processor = request.registry.remotetask.processor
    if processor is None:
        return {'available': False, 'running': False, 'stats': {}}
    return {'available': True, 'running': bool(processor.running),
            'stats': jsonable(dict(getattr(processor, 'stats', {}) or {}))}


def processing(request):
    return processorState(request)


_switching = threading.Lock()
_stopping = {}


def setProcessing(request):
    """Start or stop the processor of this server.  Stopping lets running
    jobs finish (the processor's grace period) in a thread of its own, so
    the request returns at once."""
    data = body(request, ('running',), required=('running',))
    running = flag(data, 'running')
    processor = request.registry.remotetask.processor
    if processor is None:
        raise HTTPConflict('this server has no processor: jobs are '
                           'processed by workers elsewhere')
    with _switching:
        stopping = _stopping.get(id(processor))
        if stopping is not None and stopping.is_alive():
            raise HTTPConflict('processing is stopping (running jobs get '
                               'their grace period); try again when it has '
                               'stopped')
        if running and not processor.running:
            processor.start()
        elif not running and processor.running:
            stopping = threading.Thread(target=processor.stop,
                                        name='remotetask-web-stop',
                                        daemon=True)
            _stopping[id(processor)] = stopping
            stopping.start()
    return processorState(request)


# -- Errors -------------------------------------------------------------------

def apiError(exc, request):
    """Every error under /api/ is a JSON object ``{"error": message}``."""
    allowed = allowedMethods(exc, request)
    if allowed:
        # A known URL, a method it does not serve.
        status, message = 405, '%s is not allowed on %s (allowed: %s)' % (
            request.method, request.path, ', '.join(allowed))
        request.response.headers['Allow'] = ', '.join(allowed)
    elif isinstance(exc, HTTPNotFound):
        status, message = 404, ('no such URL: %s %s (the API is described '
                                'at /api/openapi.json)' % (request.method,
                                                           request.path))
    elif isinstance(exc, HTTPError):
        status, message = exc.status_int, httpMessage(exc)
    elif isinstance(exc, JobNotFoundError):
        status, message = 404, str(exc)
    elif health.check(exc) is not None:
        status, message = 503, health.check(exc).args[0]
        request.response.headers['Retry-After'] = '30'
    elif isinstance(exc, InvalidStatusError):
        status, message = 409, str(exc)
    elif isinstance(exc, (RemoteTaskError, ValueError)):
        status, message = 400, str(exc)
    elif isinstance(exc, TransientError):
        status, message = 503, 'the database was busy; try again'
        request.response.headers['Retry-After'] = '1'
    else:
        log.error('error in %s %s', request.method, request.path,
                  exc_info=(type(exc), exc, exc.__traceback__))
        status, message = 500, 'internal error (see the server log)'
    request.response.status_int = status
    return {'error': message, 'status': status}

"""The OpenAPI 3.0 document of the JSON API (served at /api/openapi.json)."""
from remotetask import interfaces

VERSION = '1.0.0'


def _ref(name):
    return {'$ref': '#/components/schemas/%s' % name}


def _json(schema, description='OK'):
    return {'description': description,
            'content': {'application/json': {'schema': schema}}}


def _errors(*codes):
    texts = {400: 'Bad request: malformed JSON, unknown field, bad value, '
                  'unknown task, invalid input or schedule',
             401: 'Not authenticated', 403: 'Not allowed (viewer) or '
                                             'cross-site request',
             404: 'No such job', 409: 'The job is not in a status that '
                                      'allows this',
             413: 'Request body too large',
             415: 'The request body is not application/json',
             429: 'Too many failed logins from this address or for this '
                  'user name: try again after Retry-After seconds'}
    return {str(code): _json(_ref('Error'), texts[code])
            for code in sorted(set(codes))}


def _op(summary, response, *errors, body=None, params=None, tag='jobs',
        status='200'):
    """An operation.  Any request may be refused with 400 (a URL that is
    not UTF-8, a bad value), 401 or 429 (failed logins back off); one with
    a body with 413 and 415 too."""
    errors = (400, 401, 429) + errors + ((413, 415) if body is not None
                                         else ())
    op = {'summary': summary, 'tags': [tag],
          'responses': dict({status: response}, **_errors(*errors))}
    if body is not None:
        op['requestBody'] = {'required': True, 'content': {
            'application/json': {'schema': body}}}
    if params:
        op['parameters'] = params
    return op


def _accepted(op):
    """``op`` that may also answer 202 with the same body (a cancel asked
    of a processing job)."""
    op['responses']['202'] = dict(op['responses']['200'], description=(
        'Accepted: the processing job was asked to stop'))
    return op


def _existing(op):
    """``op`` that may also answer 200 with the job that holds the
    ``unique_key`` asked for (nothing is added; ``"existing": true``)."""
    op['responses']['200'] = dict(op['responses']['201'], description=(
        'OK: a job holding this unique_key exists; it is returned and '
        'nothing is added'))
    return op


def _query(name, schema, description):
    return {'name': name, 'in': 'query', 'required': False,
            'schema': schema, 'description': description}


_ID = {'name': 'id', 'in': 'path', 'required': True,
       'schema': {'type': 'integer'}}
_INTS = {'type': 'array', 'items': {'type': 'integer'}}
_EPOCH = {'type': 'number', 'nullable': True,
          'description': 'Epoch seconds (UTC)'}
_WHEN = {'oneOf': [{'type': 'number'}, {'type': 'string',
                                         'format': 'date-time'}],
         'description': 'Epoch seconds or ISO 8601 with UTC offset'}

_SECONDS = {'type': 'object', 'additionalProperties': False,
            'properties': {status: {'type': 'number', 'minimum': 0,
                                    'nullable': True}
                           for status in interfaces.FINAL_STATUSES}}
_RETENTION = {'type': 'object', 'properties': {
    'retention': _SECONDS, 'defaults': _SECONDS,
    'removed': {'type': 'object', 'additionalProperties': {
        'type': 'integer'}}}}

SCHEMAS = {
    'Error': {'type': 'object', 'required': ['error'], 'properties': {
        'error': {'type': 'string'}, 'status': {'type': 'integer'}}},
    'Status': {'type': 'string', 'enum': list(interfaces.STATUSES)},
    'Job': {'type': 'object', 'required': [
        'id', 'task', 'status', 'created', 'eta', 'starts', 'retries',
        'error', 'progress', 'cron'], 'properties': {
        'id': {'type': 'integer'}, 'task': {'type': 'string'},
        'status': _ref('Status'), 'created': _EPOCH, 'started': _EPOCH,
        'completed': _EPOCH, 'eta': _EPOCH,
        'worker': {'type': 'string', 'nullable': True},
        'starts': {'type': 'integer'}, 'retries': {'type': 'integer'},
        'error': {'type': 'string', 'nullable': True},
        'progress': {'type': 'array', 'description':
                     '[fraction 0..1 or null, message]'},
        'cron': {'type': 'boolean'}, 'schedule': _ref('Schedule')}},
    'JobDetail': {'allOf': [_ref('Job'), {'type': 'object', 'properties': {
        'input': {}, 'result': {},
        'traceback': {'type': 'string', 'nullable': True},
        'attempts': {'type': 'array', 'items': {
            'type': 'object', 'description': 'start, end, worker, outcome, '
                                             'error'}},
        'meta': {'type': 'object'}, 'lease_expires': _EPOCH,
        'time_limit': {'type': 'number', 'nullable': True},
        'max_retries': {'type': 'integer', 'nullable': True},
        'max_starts': {'type': 'integer', 'nullable': True},
        'parents': dict(_INTS, description='Ids of the jobs it was added '
                        'after (the first 100)'),
        'parents_total': {'type': 'integer'},
        'children': dict(_INTS, description='Ids of the jobs added after '
                         'it (the first 100)'),
        'children_total': {'type': 'integer'},
        'waiting_for': {'type': 'integer', 'nullable': True, 'description':
                        'A deferred job: how many parents have not '
                        'completed yet'},
        'waiting_on': dict(_INTS, description='A deferred job: up to 10 of '
                           'the parents that have not completed')}}]},
    'Step': {'oneOf': [
        {'type': 'object', 'required': ['task'],
         'additionalProperties': False, 'properties': {
             'task': {'type': 'string'}, 'input': {
                 'description': 'Any JSON value; null in a chain: the '
                 'previous step\'s result, in a then: the list of the '
                 'group\'s results'}}},
        {'type': 'array', 'minItems': 2, 'maxItems': 2,
         'description': '[task, input]'}]},
    'After': {'oneOf': [{'type': 'integer'}, _INTS], 'description':
              'Job ids: the job is deferred until they all completed, and '
              'cancelled if one fails, is cancelled or deleted'},
    'NewChain': {'type': 'object', 'required': ['steps'],
                 'additionalProperties': False, 'properties': {
                     'steps': {'type': 'array', 'minItems': 1,
                               'items': _ref('Step')},
                     'after': _ref('After')}},
    'NewGroup': {'type': 'object', 'required': ['steps'],
                 'additionalProperties': False, 'properties': {
                     'steps': {'type': 'array', 'minItems': 1,
                               'items': _ref('Step')},
                     'then': {'allOf': [_ref('Step')], 'nullable': True},
                     'after': _ref('After')}},
    'Schedule': {'type': 'object', 'description':
                 'Either the UTC fields (empty: any; dayOfWeek 0 = Monday), '
                 'or interval (run every so many seconds), or delay (run '
                 'once, so many seconds later: status "delayed"), or a '
                 'five-field cron expression in timezone',
                 'properties': {
                     'minute': _INTS, 'hour': _INTS, 'dayOfMonth': _INTS,
                     'month': _INTS, 'dayOfWeek': _INTS,
                     'delay': {'type': 'number', 'nullable': True},
                     'interval': {'type': 'number', 'nullable': True},
                     'expression': {'type': 'string', 'nullable': True},
                     'timezone': {'type': 'string', 'nullable': True}}},
    'NewJob': {'type': 'object', 'required': ['task'],
               'additionalProperties': False, 'properties': {
                   'task': {'type': 'string'},
                   'input': {'description': 'Any JSON value'},
                   'delay': {'type': 'number', 'minimum': 0},
                   'eta': _WHEN, 'startLater': {'type': 'boolean'},
                   'time_limit': {'type': 'number'},
                   'max_retries': {'type': 'integer'},
                   'max_starts': {'type': 'integer'},
                   'after': _ref('After'),
                   'queue': {'type': 'string'},
                   'priority': {'type': 'integer', 'minimum': -1000,
                                'maximum': 1000},
                   'unique_key': {'type': 'string'}}},
    'NewCronJob': {'allOf': [_ref('Schedule'), {
        'type': 'object', 'required': ['task'], 'properties': {
            'task': {'type': 'string'}, 'input': {},
            'queue': {'type': 'string'},
            'priority': {'type': 'integer', 'minimum': -1000,
                         'maximum': 1000}}}]},
    'CronEdit': {'allOf': [_ref('Schedule'), {
        'type': 'object', 'description': 'The new schedule; the input is '
        'replaced only if given (the task can not be changed)',
        'properties': {'input': {}}}]},
    'JobPage': {'type': 'object', 'required': [
        'jobs', 'total', 'next', 'scanned'], 'properties': {
        'jobs': {'type': 'array', 'items': _ref('Job')},
        'total': {'type': 'integer', 'nullable': True, 'description':
                  'Jobs matching the status filter (null with a task '
                  'filter)'},
        'next': {'oneOf': [{'type': 'integer', 'nullable': True},
                           {'type': 'string'}], 'description':
                 'Cursor of the next page (null: last page): a job id when '
                 'sorting by id, else GROUP:ID (e.g. "completed:4711")'},
        'scanned': {'type': 'integer'}}},
    'Counts': {'type': 'object', 'required': [
        'counts', 'total', 'oldest_due', 'processing'], 'properties': {
        'counts': {'type': 'object', 'additionalProperties':
                   {'type': 'integer'}},
        'total': {'type': 'integer'}, 'oldest_due': _EPOCH,
        'processing': _ref('Processing')}},
    'Worker': {'type': 'object', 'required': [
        'id', 'host', 'pid', 'kind', 'version', 'started', 'heartbeat',
        'interval', 'expires', 'concurrency', 'tasks', 'running', 'done',
        'failed'], 'properties': {
        'id': {'type': 'string', 'description': 'Worker id (host:pid)'},
        'host': {'type': 'string'}, 'pid': {'type': 'integer'},
        'kind': {'type': 'string', 'enum': ['serve', 'worker', 'thread'],
                 'description': 'remotetask serve, remotetask worker, or '
                 'startProcessing() in an application'},
        'version': {'type': 'string', 'description': 'remotetask version'},
        'started': _EPOCH, 'heartbeat': _EPOCH, 'expires': _EPOCH,
        'interval': {'type': 'number', 'description': 'Seconds between '
                     'heartbeats'},
        'concurrency': {'type': 'integer'},
        'tasks': {'type': 'array', 'items': {'type': 'string'},
                  'description': 'The tasks it runs'},
        'running': {'type': 'array', 'items': {'type': 'integer'},
                    'description': 'Ids of the jobs it has claimed'},
        'done': {'type': 'integer'}, 'failed': {'type': 'integer'}}},
    'Workers': {'type': 'object', 'required': [
        'workers', 'unserved', 'warnings'], 'properties': {
        'workers': {'type': 'array', 'items': _ref('Worker')},
        'unserved': {'type': 'array', 'description': 'Tasks with jobs '
                     'waiting that no live worker runs', 'items': {
                         'type': 'object', 'properties': {
                             'task': {'type': 'string'},
                             'waiting': {'type': 'integer'}}}},
        'warnings': {'type': 'array', 'items': {'type': 'string'}}}},
    'Processing': {'type': 'object', 'required': [
        'available', 'running', 'stats'], 'properties': {
        'available': {'type': 'boolean'}, 'running': {'type': 'boolean'},
        'stats': {'type': 'object'}}},
}


def _withTasks(schemas, tasks):
    """``schemas`` whose new jobs name one of ``tasks`` (an enum: clients
    and fuzzers see which tasks the server has)."""
    schemas = dict(schemas)
    task = {'type': 'string', 'enum': list(tasks)}
    new = schemas['NewJob']
    schemas['NewJob'] = dict(new, properties=dict(new['properties'],
                                                  task=task))
    cron = schemas['NewCronJob']
    schemas['NewCronJob'] = {'allOf': [cron['allOf'][0], dict(
        cron['allOf'][1], properties=dict(cron['allOf'][1]['properties'],
                                          task=task))]}
    return schemas


def document(server_url, tasks=None):
    """The OpenAPI document, with ``server_url`` as its server (and the
    names of ``tasks`` as the tasks new jobs may name, if given)."""
    from remotetask.web import routing, stats
    job = _json(_ref('JobDetail'))
    schemas = dict(SCHEMAS, **routing.SCHEMAS, **stats.SCHEMAS)
    if tasks:
        schemas = _withTasks(schemas, tasks)
    paths = dict(routing.openapiPaths(_op, _json, _ref),
                 **stats.openapiPaths(_op, _json, _ref))
    return {
        'openapi': '3.0.3',
        'info': {'title': 'remotetask', 'version': VERSION, 'description':
                 'Jobs of a remotetask service.  Authenticate with HTTP '
                 'Basic, a bearer token (`remotetask user token`) or the '
                 'login form\'s session (then send X-CSRF-Token).  Viewers '
                 'may read, managers may also change.'},
        'servers': [{'url': server_url}],
        'components': {
            'schemas': schemas,
            'securitySchemes': {
                'basic': {'type': 'http', 'scheme': 'basic'},
                'bearer': {'type': 'http', 'scheme': 'bearer'}}},
        'security': [{'basic': []}, {'bearer': []}],
        'paths': {
            '/api/': {'get': _op(
                'An index of the API: its endpoints, and where the OpenAPI '
                'document, XML-RPC, the page and the metrics are',
                _json({'type': 'object'}), tag='service')},
            '/api/tasks': {'get': _op(
                'The registered tasks', _json({'type': 'object'}),
                tag='tasks')},
            '/api/counts': {'get': _op(
                'Number of jobs per status', _json(_ref('Counts')),
                tag='service')},
            '/api/jobs': {
                'get': _op('A page of jobs, newest (or oldest) first',
                           _json(_ref('JobPage')), 400, params=[
                               _query('status', _ref('Status'),
                                      'Only jobs in this status (indexed)'),
                               _query('task', {'type': 'string'},
                                      'Only jobs of this task (indexed; '
                                      'with a status too, a page looks at '
                                      'no more than 20000 ids and may have '
                                      'fewer jobs than limit and a next)'),
                               _query('sort', {'type': 'string', 'enum': [
                                   '-id', 'id', 'status', '-status', 'task',
                                   '-task']},
                                      'By job id: -id highest first '
                                      '(default).  Ids grow with time in '
                                      'each process and thread, which take '
                                      'them in blocks of 1000: id order is '
                                      'creation order only roughly.  '
                                      'status: status by status in the '
                                      'order of a job\'s life, each by id; '
                                      'task: task by task (by name), each '
                                      'by id; -status, -task: the reverse.  '
                                      'All walk indexes, as cheap as id.'),
                               _query('queue', {'type': 'string'},
                                      'Only jobs of this queue (checked '
                                      'job by job, as a second filter)'),
                               _query('priority', {'type': 'integer'},
                                      'Only jobs of this priority (job by '
                                      'job)'),
                               _query('limit', {'type': 'integer',
                                                'minimum': 1,
                                                'maximum': 200},
                                      'Page size (default 50)'),
                               _query('cursor', {'type': 'string'},
                                      '"next" of the previous page (a job '
                                      'id, or GROUP:ID when sorting by '
                                      'status or task)')]),
                'post': _existing(_op(
                    'Add a job', _json(_ref('JobDetail'), 'Created'),
                    400, 403, 413, body=_ref('NewJob'), status='201'))},
            '/api/jobs/{id}': {
                'get': _op('A job with its input, result, error, '
                           'traceback, progress and attempts', job, 404,
                           params=[_ID]),
                'delete': _op('Delete a job that is not processing',
                              _json({'type': 'object'}), 403, 404, 409,
                              params=[_ID])},
            '/api/jobs/{id}/{action}': {'post': _accepted(_op(
                'cancel a waiting job (200: it is cancelled) or a '
                'processing one (202: its task is asked to stop, and the '
                'job ends cancelled when its run returns; a cron job is not '
                'scheduled again), retry a failed or cancelled one, '
                'start a "start later" one, reschedule a cron job', job,
                400, 403, 404, 409, params=[_ID, {
                    'name': 'action', 'in': 'path', 'required': True,
                    'schema': {'type': 'string', 'enum': [
                        'cancel', 'retry', 'start', 'reschedule']}}]))},
            '/api/chains': {'post': _op(
                'Add a chain: each step waits for the previous one',
                _json({'type': 'object', 'properties': {
                    'ids': _INTS, 'jobs': {'type': 'array',
                                           'items': _ref('Job')}}},
                      'Created'), 400, 403, 413, body=_ref('NewChain'),
                status='201')},
            '/api/groups': {'post': _op(
                'Add a group, and a then job that runs once after all of it',
                _json({'type': 'object', 'properties': {
                    'ids': _INTS, 'then': {'type': 'integer',
                                           'nullable': True},
                    'jobs': {'type': 'array', 'items': _ref('Job')}}},
                      'Created'), 400, 403, 413, body=_ref('NewGroup'),
                status='201')},
            '/api/cronjobs': {'post': _op(
                'Add a cron job', _json(_ref('JobDetail'), 'Created'), 400,
                403, body=_ref('NewCronJob'), status='201')},
            '/api/cronjobs/{id}': {'put': _op(
                'Replace the schedule (and input) of a cron job and '
                'reschedule it', job, 400, 403, 404, 409,
                body=_ref('CronEdit'), params=[_ID])},
            '/api/clean': {'post': _op(
                'Remove final jobs: one bounded step (at most limit jobs '
                'removed, 10 x limit looked at per status) in one '
                'transaction; repeat with the cursor while more is true',
                _json({'type': 'object', 'properties': {
                    'removed': {'type': 'integer'},
                    'more': {'type': 'boolean'},
                    'cursor': _ref('Cursor')}}), 400, 403, 409,
                body={'type': 'object', 'additionalProperties': False,
                      'properties': {
                          'status': {'type': 'array',
                                     'items': _ref('Status')},
                          'before': _WHEN,
                          'limit': _ref('StepLimit'),
                          'cursor': _ref('Cursor')}}, tag='service')},
            '/api/health': {
                'get': _op('The storage condition this process saw: '
                           'disk_full (true from a failed commit of a full '
                           'disk until a commit works again), since, error',
                           _json({'type': 'object', 'properties': {
                               'disk_full': {'type': 'boolean'},
                               'since': _EPOCH,
                               'error': {'type': 'string',
                                         'nullable': True},
                               'seen': {'type': 'integer'}}}),
                           tag='service')},
            '/api/retention': {
                'get': _op('How long finished jobs are kept (seconds per '
                           'final status, null: for ever), the defaults, '
                           'and how many jobs were removed (by retention, '
                           'clean, delete)', _json(_RETENTION),
                           tag='service'),
                'put': _op('Set the retention of some final statuses '
                           '(seconds >= 0, or null to keep for ever); the '
                           'others stay', _json(_RETENTION), 400, 403,
                           body=_SECONDS, tag='service')},
            '/api/processing': {
                'get': _op('Whether this server processes jobs',
                           _json(_ref('Processing')), tag='service'),
                'post': _op('Start or stop processing in this server',
                            _json(_ref('Processing')), 403, 409,
                            body={'type': 'object', 'required': ['running'],
                                  'additionalProperties': False,
                                  'properties': {'running':
                                                 {'type': 'boolean'}}},
                            tag='service')},
            '/api/workers': {'get': _op(
                'The live workers (the worker registry), and the tasks '
                'with waiting jobs that none of them runs',
                _json(_ref('Workers')), tag='service')},
            '/api/me': {'get': _op('Who you are, and a CSRF token',
                                   _json({'type': 'object'}),
                                   tag='service')},
            **paths,
        },
    }

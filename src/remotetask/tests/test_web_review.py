"""Acceptance review of the web service: bad numbers, sorting by status and
task, responses checked against the OpenAPI document."""
import json
import math
import xmlrpc.client

import pytest

from remotetask.db import ServiceRunner
from remotetask.interfaces import STATUSES
from remotetask.tests.webhelpers import call, exampleDB, runAll, webApp
from remotetask.tests.webhelpers import db, app  # noqa: F401  fixtures


def post(app, path, text, status):
    return app.post(path, text, content_type='application/json',
                    status=status)


@pytest.mark.parametrize('field, value', [
    ('delay', 'NaN'), ('delay', 'Infinity'), ('delay', '1e400'),
    ('eta', '-Infinity'), ('time_limit', '1e400'), ('max_retries', '1.5'),
    ('max_starts', '2.5')])
def test_non_finite_and_fractional_numbers_are_400(app, db, field, value):
    response = post(app, '/api/jobs', '{"task": "echo", "%s": %s}'
                    % (field, value), status=400)
    assert field in response.json['error'] or 'is not JSON' in \
        response.json['error']
    assert ServiceRunner(db)(lambda s: s.count()) == 0


def test_nan_anywhere_in_a_body_is_400(app, db):
    response = post(app, '/api/jobs', '{"task": "echo", "input": [NaN]}',
                    status=400)
    assert 'NaN is not JSON' in response.json['error']
    response = post(app, '/api/cronjobs', '{"task": "echo", "delay": NaN}',
                    status=400)
    assert ServiceRunner(db)(lambda s: s.count()) == 0


def test_cron_delay_must_be_finite(app, db):
    for delay in (float('nan'), float('inf')):
        with pytest.raises(xmlrpc.client.Fault) as info:
            call(app, 'addCronJob', 'echo', None, [], [], [], [], [], delay)
        assert info.value.faultCode == 5
        assert 'positive finite' in info.value.faultString
    assert ServiceRunner(db)(lambda s: s.count()) == 0


def test_responses_are_strict_json_even_for_odd_stored_values(app, db):
    # Values stored through the Python API that JSON can not hold come
    # back as their repr, so every response parses as strict JSON.
    jobid = ServiceRunner(db)(lambda s: s.add(
        'echo', {'x': float('inf')}, time_limit=float('inf')))
    raw = app.get('/api/jobs/%d' % jobid).text
    detail = json.loads(raw, parse_constant=lambda c: pytest.fail(c))
    assert detail['input'] == "{'x': inf}"
    assert detail['time_limit'] == 'inf'
    assert not math.isnan(detail['id'])


def pages(app, query, limit=3):
    """All jobs of a listing, page by page, following ``next``."""
    found, cursor = [], None
    while True:
        url = '/api/jobs?%s&limit=%d' % (query, limit)
        if cursor is not None:
            url += '&cursor=%s' % cursor
        page = app.get(url).json
        assert len(page['jobs']) <= limit
        found += [(j['status'], j['task'], j['id']) for j in page['jobs']]
        cursor = page['next']
        if cursor is None:
            return found, page


@pytest.fixture
def mixed(app, db):
    """Jobs of three tasks in four statuses."""
    def make(service):
        ids = [service.add('echo' if i % 3 else 'sum', [i]) for i in
               range(8)]
        ids += [service.add('sleep', 0, startLater=True) for i in range(2)]
        ids += [service.add('fail', 1, delay=3600) for i in range(2)]
        service.cancel(ids[-1])
        return ids
    ids = ServiceRunner(db)(make)
    runAll(db)  # echo, sum: completed
    return ids


def test_sort_by_status_pages_through_every_status_in_order(app, mixed):
    found, page = pages(app, 'sort=status')
    order = list(STATUSES)
    expected = sorted(found, key=lambda j: (order.index(j[0]), j[2]))
    assert found == expected and len(found) == 12
    assert [j[0] for j in found][:3] == ['start later', 'start later',
                                         'delayed']
    assert page['total'] == 12
    backwards, _ = pages(app, 'sort=-status', limit=5)
    assert backwards == found[::-1]
    # with a task filter: the status indexes, each id checked
    sums, page = pages(app, 'sort=status&task=sum', limit=2)
    assert sums == [j for j in found if j[1] == 'sum'] and len(sums) == 3
    assert page['total'] is None
    # with a status filter: that one index
    done, page = pages(app, 'sort=-status&status=completed', limit=2)
    assert done == [j for j in found[::-1] if j[0] == 'completed']
    assert page['total'] == 8


def test_sort_by_task_pages_through_every_task_by_name(app, mixed):
    found, page = pages(app, 'sort=task')
    assert found == sorted(found, key=lambda j: (j[1], j[2]))
    assert [j[1] for j in found] == ['echo'] * 5 + ['fail'] * 2 + [
        'sleep'] * 2 + ['sum'] * 3
    assert page['total'] == 12
    backwards, _ = pages(app, 'sort=-task', limit=4)
    assert backwards == found[::-1]
    failed, page = pages(app, 'sort=task&status=cancelled', limit=1)
    assert failed == [j for j in found if j[0] == 'cancelled']
    assert page['total'] == 1
    one, _ = pages(app, 'sort=-task&task=sleep')
    assert one == [j for j in found[::-1] if j[1] == 'sleep']


def test_group_sorts_scan_a_bounded_number(app, mixed, monkeypatch):
    from remotetask.web import api
    monkeypatch.setattr(api, 'SCAN_LIMIT', 2)
    found, _ = pages(app, 'sort=status&task=sleep', limit=50)
    assert [j[2] for j in found] == mixed[8:10]
    page = app.get('/api/jobs?sort=status&task=sleep&limit=50').json
    assert page['scanned'] <= 2 and page['next'] is not None


@pytest.mark.parametrize('query', [
    'sort=name', 'sort=status&cursor=12', 'sort=status&cursor=bogus:3',
    'sort=task&cursor=echo:x', 'sort=id&cursor=echo:3',
    'sort=task&cursor=echo:99999999999999999999'])
def test_bad_sorts_and_cursors_are_400(app, mixed, query):
    error = app.get('/api/jobs?' + query, status=400).json['error']
    assert 'sort' in error or 'cursor' in error


def test_web_readme_doctest():
    """The web package's README.txt is a doctest (a real server in
    process); nothing else runs it."""
    import unittest
    from remotetask.tests import test_doctests
    result = unittest.TextTestRunner(verbosity=0).run(
        test_doctests.suite('web/README.txt'))
    assert result.testsRun == 1
    assert result.wasSuccessful(), '\n'.join(
        text for _, text in result.failures + result.errors)


# -- Responses against the OpenAPI document ----------------------------------

def documented(doc, method, template, status):
    """The schema the document gives for ``status`` of an operation (with
    the components, so that $refs resolve); fails if it gives none."""
    responses = doc['paths'][template][method]['responses']
    assert str(status) in responses, (
        '%s %s answered %s, not documented (documented: %s)'
        % (method.upper(), template, status, sorted(responses)))
    schema = responses[str(status)]['content']['application/json'][
        'schema']
    return dict(schema, components=doc['components'])


def test_responses_match_the_openapi_document(app, db):
    from openapi_schema_validator import OAS30Validator
    doc = app.get('/api/openapi.json').json
    seen = set()

    def check(method, template, url, body=None, status=None):
        kw = {'status': status or '*', 'expect_errors': True}
        if body is not None:
            response = app.request(url, method=method.upper(),
                                   body=json.dumps(body).encode(),
                                   content_type='application/json', **kw)
        else:
            response = app.request(url, method=method.upper(), **kw)
        assert response.content_type == 'application/json', url
        schema = documented(doc, method, template, response.status_int)
        OAS30Validator(schema).validate(response.json)
        seen.add((method, template))
        return response.json

    check('get', '/api/tasks', '/api/tasks')
    check('get', '/api/me', '/api/me')
    check('get', '/api/', '/api/')
    check('get', '/api/workers', '/api/workers')
    check('get', '/api/counts', '/api/counts')
    job = check('post', '/api/jobs', '/api/jobs',
                {'task': 'sum', 'input': [1, 2]}, 201)
    check('post', '/api/jobs', '/api/jobs', {'task': 'nope'}, 400)
    check('post', '/api/jobs', '/api/jobs', {'task': 'echo', 'x': 1}, 400)
    failing = check('post', '/api/jobs', '/api/jobs',
                    {'task': 'fail', 'input': 'boom', 'max_retries': 0},
                    201)
    later = check('post', '/api/jobs', '/api/jobs',
                  {'task': 'echo', 'startLater': True}, 201)
    chain = check('post', '/api/chains', '/api/chains',
                  {'steps': [['echo', [1]], {'task': 'sum'}]}, 201)
    check('get', '/api/jobs/{id}', '/api/jobs/%d' % chain['ids'][1])
    check('post', '/api/chains', '/api/chains', {'steps': []}, 400)
    check('post', '/api/groups', '/api/groups',
          {'steps': [['echo', 1]], 'then': ['sum', None],
           'after': chain['ids'][0]}, 201)
    check('post', '/api/groups', '/api/groups', {'steps': [['nope', 1]]},
          400)
    runAll(db)
    for query in ('', '?sort=id&limit=1', '?sort=status&limit=1',
                  '?sort=-task&limit=1&status=completed', '?task=sum'):
        check('get', '/api/jobs', '/api/jobs' + query)
    check('get', '/api/jobs', '/api/jobs?sort=bogus', status=400)
    one = '/api/jobs/{id}'
    check('get', one, '/api/jobs/%d' % job['id'])
    check('get', one, '/api/jobs/%d' % failing['id'])
    check('get', one, '/api/jobs/999999', status=404)
    action = '/api/jobs/{id}/{action}'
    check('post', action, '/api/jobs/%d/retry' % failing['id'])
    check('post', action, '/api/jobs/%d/retry' % job['id'], status=409)
    check('post', action, '/api/jobs/%d/start' % later['id'])
    check('post', action, '/api/jobs/%d/cancel' % later['id'])
    check('post', action, '/api/jobs/%d/bogus' % job['id'], status=400)
    check('post', action, '/api/jobs/999999/cancel', status=404)
    cron = check('post', '/api/cronjobs', '/api/cronjobs',
                 {'task': 'echo', 'input': 1, 'minute': [5]}, 201)
    check('post', '/api/cronjobs', '/api/cronjobs',
          {'task': 'echo', 'minute': [99]}, 400)
    edit = '/api/cronjobs/{id}'
    check('put', edit, '/api/cronjobs/%d' % cron['id'],
          {'input': 2, 'hour': [3]})
    check('put', edit, '/api/cronjobs/%d' % job['id'], {'delay': 5}, 409)
    check('put', edit, '/api/cronjobs/999999', {'delay': 5}, 404)
    check('put', edit, '/api/cronjobs/%d' % cron['id'], {'task': 'x'}, 400)
    check('post', action, '/api/jobs/%d/reschedule' % cron['id'])
    check('delete', one, '/api/jobs/%d' % job['id'])
    check('delete', one, '/api/jobs/%d' % job['id'], status=404)
    check('post', '/api/clean', '/api/clean', {'status': ['cancelled']})
    check('post', '/api/clean', '/api/clean', {'status': ['bogus']},
          status=400)
    check('get', '/api/health', '/api/health')
    check('get', '/api/retention', '/api/retention')
    check('put', '/api/retention', '/api/retention', {'completed': 60})
    check('put', '/api/retention', '/api/retention', {'completed': -1},
          status=400)
    check('get', '/api/processing', '/api/processing')
    check('post', '/api/processing', '/api/processing', {'running': True},
          status=409)  # no processor in this app
    # Routing (remotetask.web.routing).
    check('post', '/api/pause', '/api/pause', {'queue': 'q'})
    check('post', '/api/pause', '/api/pause', {'queue': 7}, status=400)
    check('get', '/api/queues', '/api/queues')
    check('post', '/api/resume', '/api/resume', {})
    check('post', '/api/bulk/retry', '/api/bulk/retry', {'dry_run': True})
    check('post', '/api/bulk/purge', '/api/bulk/purge', {'queue': 'q'})
    check('post', '/api/bulk/delete', '/api/bulk/delete',
          {'status': 'cancelled', 'dry_run': True})
    check('post', '/api/bulk/delete', '/api/bulk/delete',
          {'status': 'processing'}, status=409)
    check('post', '/api/bulk/purge', '/api/bulk/purge', {'x': 1},
          status=400)
    check('get', '/api/jobs', '/api/jobs?queue=q&priority=0')
    # Statistics (remotetask.web.stats).
    check('get', '/api/stats', '/api/stats')
    operations = {(method, path) for path, ops in doc['paths'].items()
                  for method in ops}
    assert operations - seen == set()
    # ... and every route of the API is in the document.
    from pyramid.interfaces import IRoutesMapper
    mapper = app.app.app.registry.getUtility(IRoutesMapper)
    patterns = {route.pattern.replace('{id:\\d{1,18}}', '{id}')
                for route in mapper.get_routes()
                if route.pattern.startswith('/api/')}
    assert patterns - set(doc['paths']) == {'/api/openapi.json'}
    # The request bodies the document shows are the ones the API takes.
    put_body = doc['paths'][edit]['put']['requestBody']['content'][
        'application/json']['schema']
    OAS30Validator(dict(put_body, components=doc['components'])).validate(
        {'input': 2, 'hour': [3]})
    # 401 for anonymous use from elsewhere than loopback: an Error too.
    remote = webApp(db, remote='192.0.2.7')
    response = remote.get('/api/jobs', status=401)
    OAS30Validator(documented(doc, 'get', '/api/jobs', 401)).validate(
        response.json)


def test_a_users_file_with_a_bad_role(db, tmp_path, caplog):
    from remotetask.tests.webhelpers import basic, usersFile
    from remotetask.web.auth import Users, UsersFileError
    path, token = usersFile(tmp_path)
    app = webApp(db, users=path)
    app.get('/api/counts', headers=basic('vic', 'vic-pw'))
    with open(path) as f:
        data = json.load(f)
    data['users']['vic']['role'] = 'admin'
    with open(path, 'w') as f:
        json.dump(data, f)
    with pytest.raises(UsersFileError, match="user 'vic' has role 'admin'; "
                       "a role is one of: viewer, manager"):
        Users(path)
    # A running server keeps the users it had, and says why, once.
    caplog.set_level('ERROR', logger='remotetask.web')
    for i in range(3):
        assert app.get('/api/me', headers=basic('vic', 'vic-pw')).json[
            'role'] == 'viewer'
    errors = [r.getMessage() for r in caplog.records
              if 'has role' in r.getMessage()]
    assert len(errors) == 1 and 'still using the users' in errors[0]
    app.post_json('/api/jobs', {'task': 'echo'},
                  headers=basic('vic', 'vic-pw'), status=403)


def test_xmlrpc_faults_when_the_database_fails(app, db, monkeypatch,
                                               caplog):
    """A conflict that outlasts pyramid_retry, or an error around the
    method, is a fault (never a 500) and rolls back."""
    from ZODB.POSException import ConflictError
    from remotetask.web import xmlrpc as rpc
    calls = []

    def conflicted(request, task, input=None):
        calls.append(request.service.add(task, input))
        raise ConflictError('simulated')

    def broken(request):
        raise RuntimeError('disk on fire')
    monkeypatch.setitem(rpc.METHODS, 'add', (rpc.MANAGE, conflicted))
    monkeypatch.setitem(rpc.METHODS, 'getAvailableTasks',
                        (rpc.VIEW, broken))
    with pytest.raises(xmlrpc.client.Fault) as info:
        call(app, 'add', 'echo', 1)
    assert info.value.faultCode == rpc.TRY_AGAIN
    assert 'try again' in info.value.faultString
    assert len(calls) == 3  # pyramid_retry's attempts
    assert ServiceRunner(db)(lambda s: s.count()) == 0
    with pytest.raises(xmlrpc.client.Fault) as info:
        call(app, 'getAvailableTasks')
    assert info.value.faultCode == rpc.INTERNAL
    assert 'RuntimeError' in info.value.faultString

    # a conflict when pyramid_tm commits, every attempt
    def conflictAtCommit(request, jobid):
        def hook():
            raise ConflictError('at commit')
        request.tm.get().addBeforeCommitHook(hook)
        return True
    monkeypatch.setitem(rpc.METHODS, 'cancel', (rpc.MANAGE,
                                                conflictAtCommit))
    with pytest.raises(xmlrpc.client.Fault) as info:
        call(app, 'cancel', 1)
    assert info.value.faultCode == rpc.TRY_AGAIN


def test_xmlrpc_other_http_methods_are_405(app, db):
    response = app.get('/RPC2', status=405)
    assert response.headers['Allow'] == 'POST'
    assert 'POST a methodCall' in response.text
    webApp(db, remote='192.0.2.7').get('/RPC2', status=401)


def test_metrics_parse_with_their_types(app, db):
    from prometheus_client.parser import text_string_to_metric_families
    call(app, 'add', 'sum', [1, 2])
    call(app, 'add', 'fail', 'x')
    runAll(db)
    response = app.get('/metrics')
    assert response.content_type.startswith('text/plain')
    families = {f.name: f for f in text_string_to_metric_families(
        response.text)}
    types = {name: families[name].type for name in (
        'remotetask_jobs', 'remotetask_queue_oldest_age_seconds',
        'remotetask_jobs_processed', 'remotetask_jobs_failed',
        'remotetask_job_run_seconds')}
    assert types == {
        'remotetask_jobs': 'gauge',
        'remotetask_queue_oldest_age_seconds': 'gauge',
        'remotetask_jobs_processed': 'counter',
        'remotetask_jobs_failed': 'counter',
        'remotetask_job_run_seconds': 'histogram'}
    jobs = {s.labels['status']: s.value
            for s in families['remotetask_jobs'].samples}
    assert set(jobs) == set(STATUSES)
    assert (jobs['completed'], jobs['error']) == (1, 1)


@pytest.mark.parametrize('method', ['getStatus', 'getResult', 'getError',
                                    'cancel', 'startJob'])
@pytest.mark.parametrize('jobid', ['1', 1.0, None, [1], True])
def test_xmlrpc_job_ids_of_the_wrong_type(app, method, jobid):
    from remotetask.web import xmlrpc as rpc
    with pytest.raises(xmlrpc.client.Fault) as info:
        call(app, method, jobid)
    assert info.value.faultCode == rpc.BAD_ARGUMENTS
    assert 'jobid must be an integer (a job id), not %r' % (jobid,) == \
        info.value.faultString


@pytest.mark.parametrize('method', ['add', 'addCronJob'])
def test_xmlrpc_task_names_of_the_wrong_type(app, db, method):
    from remotetask.web import xmlrpc as rpc
    with pytest.raises(xmlrpc.client.Fault) as info:
        call(app, method, 1)
    assert (info.value.faultCode, info.value.faultString) == (
        rpc.BAD_ARGUMENTS, 'task must be a string (a task name), not 1')
    assert ServiceRunner(db)(lambda s: s.count()) == 0


def test_example_tasks_say_what_they_do(app):
    docs = {t['name']: t['doc'] for t in app.get('/api/tasks').json['tasks']}
    assert docs['sum'] == 'Add a list of numbers.'
    assert all(docs.values()), docs


def test_xmlrpc_cron_fields_must_be_arrays(app, db):
    from remotetask.web import xmlrpc as rpc
    with pytest.raises(xmlrpc.client.Fault) as info:
        call(app, 'addCronJob', 'echo', None, [0], '5')
    assert (info.value.faultCode, info.value.faultString) == (
        rpc.BAD_ARGUMENTS, "hour must be an array of integers, not '5'")
    jobid = call(app, 'addCronJob', 'echo', None, [0], [5])
    assert ServiceRunner(db)(lambda s: (s.jobs[jobid].minute,
                                        s.jobs[jobid].hour)) == ((0,), (5,))


def test_unknown_api_urls_say_so(app):
    for method, url in (('GET', '/api/jobs/abc'), ('GET', '/api/nothing')):
        response = app.request(url, method=method, status=404)
        assert response.json['error'] == (
            'no such URL: %s %s (the API is described at '
            '/api/openapi.json)' % (method, url))
    # a known URL with a method it does not serve: 405 and Allow
    response = app.request('/api/jobs/1', method='PUT', status=405)
    assert response.json['error'].startswith(
        'PUT is not allowed on /api/jobs/1 (allowed: ')
    assert 'GET' in response.headers['Allow'].split(', ')
    # a job that does not exist is still said so
    assert app.get('/api/jobs/99', status=404).json['error'] == \
        'no job with id 99'

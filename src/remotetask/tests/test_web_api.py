"""The JSON API, in process with webtest (anonymous mode, from loopback)."""
import time

import pytest

from remotetask.db import ServiceRunner
from remotetask.processor import Processor
from remotetask.tests.webhelpers import call, exampleDB, runAll, webApp
from remotetask.tests.webhelpers import db, app  # noqa: F401  fixtures
from remotetask.web import api


def add(app, **data):
    return app.post_json('/api/jobs', data, status=201).json


def test_tasks_and_openapi(app):
    names = [t['name'] for t in app.get('/api/tasks').json['tasks']]
    assert names == ['echo', 'fail', 'sleep', 'sum']
    doc = app.get('/api/openapi.json').json
    assert doc['openapi'].startswith('3.')
    validator = pytest.importorskip('openapi_spec_validator')
    validator.validate(doc)
    # Every documented path answers (not 404) with the documented method.
    for path, ops in doc['paths'].items():
        concrete = path.replace('{id}', '1').replace('{action}', 'cancel')
        for method in ops:
            response = app.request(concrete, method=method.upper(),
                                   expect_errors=True)
            assert response.status_int != 404 or 'no job' in \
                response.json['error'], (method, path)
    # Every $ref points to a schema that exists.
    refs = set()

    def walk(node):
        if isinstance(node, dict):
            if '$ref' in node:
                refs.add(node['$ref'].rsplit('/', 1)[1])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
    walk(doc)
    assert refs <= set(doc['components']['schemas'])


def test_add_run_and_detail(app, db):
    job = add(app, task='sum', input=[1, 2, 3.5])
    assert job['status'] == 'queued' and job['input'] == [1, 2, 3.5]
    runAll(db)
    detail = app.get('/api/jobs/%d' % job['id']).json
    assert detail['status'] == 'completed'
    assert detail['result'] == 6.5
    assert len(detail['attempts']) == 1
    assert detail['attempts'][0]['outcome'] == 'completed'


def test_failure_has_error_and_retry(app, db):
    job = add(app, task='fail', input='it broke')
    runAll(db)
    detail = app.get('/api/jobs/%d' % job['id']).json
    assert detail['status'] == 'error' and detail['error'] == 'it broke'
    retried = app.post('/api/jobs/%d/retry' % job['id']).json
    assert retried['status'] == 'queued'
    # A queued job can not be retried: 409, and nothing changed.
    error = app.post('/api/jobs/%d/retry' % job['id'], status=409).json
    assert 'can not retry job %d' % job['id'] in error['error']


def test_traceback_of_unexpected_error(app, db):
    job = add(app, task='sleep', input='not a number')  # TaskError: no tb
    runAll(db)
    assert app.get('/api/jobs/%d' % job['id']).json['traceback'] is None
    job = add(app, task='sum', input=None)
    runAll(db)
    detail = app.get('/api/jobs/%d' % job['id']).json
    assert detail['status'] == 'error'
    assert 'input must be a list of numbers' in detail['error']


def test_delay_eta_start_later_cancel_delete(app):
    now = time.time()
    delayed = add(app, task='echo', input=1, delay=3600)
    assert delayed['status'] == 'delayed'
    assert delayed['eta'] == pytest.approx(now + 3600, abs=60)
    at = add(app, task='echo', input=2, eta='2099-01-01T00:00:00Z')
    assert at['eta'] == 4070908800.0
    later = add(app, task='echo', input=3, startLater=True)
    assert later['status'] == 'start later'
    assert app.post('/api/jobs/%d/start' % later['id']).json['status'] \
        == 'queued'
    assert app.post('/api/jobs/%d/cancel' % delayed['id']).json['status'] \
        == 'cancelled'
    assert app.post('/api/jobs/%d/cancel' % delayed['id'],
                    status=409).json['error'].startswith('can not cancel')
    app.delete('/api/jobs/%d' % delayed['id'])
    app.get('/api/jobs/%d' % delayed['id'], status=404)
    app.post('/api/jobs/%d/explode' % at['id'], status=400)


def test_bad_requests_are_400_with_a_message(app):
    def bad(data, expected, status=400, **kw):
        response = app.post('/api/jobs', data, status=status,
                            content_type='application/json', **kw)
        assert expected in response.json['error'], response.json
    bad('{"task": "echo"', 'not JSON')
    bad('[1, 2]', 'must be a JSON object')
    bad('{"task": "echo", "colour": 1}', 'unknown field(s) colour')
    bad('{"input": 1}', 'missing field(s): task')
    bad('{"task": "nope"}', "unknown task 'nope'")
    bad('{"task": "echo", "delay": "soon"}', 'delay must be a number')
    bad('{"task": "echo", "delay": 1, "eta": 2}', 'either delay or eta')
    bad('{"task": "echo", "eta": "tomorrow"}', 'ISO 8601')
    bad('{"task": "echo", "eta": "2030-01-01T00:00"}', 'UTC offset')
    bad('{"task": "echo", "startLater": "yes"}', 'true or false')
    bad(b'\xff\xfe', 'not JSON')
    bad('[' * 100000 + ']' * 100000, 'nested too deeply')
    app.get('/api/jobs?status=bogus', status=400)
    app.get('/api/jobs?limit=0', status=400)
    app.get('/api/jobs?cursor=x', status=400)
    app.get('/api/jobs?sort=name', status=400)
    assert app.get('/api/jobs/99', status=404).json['error'] \
        == 'no job with id 99'
    assert app.get('/api/nothing', status=404).json['status'] == 404
    app.get('/api/jobs/%d' % 2 ** 70, status=404)
    app.get('/api/jobs/%d' % 2 ** 62, status=404)


def test_body_size_limit(db):
    app = webApp(db, max_body=1000)
    app.post_json('/api/jobs', {'task': 'echo', 'input': 'x' * 2000},
                  status=413)
    assert app.get('/api/counts').json['total'] == 0
    app.post('/RPC2', b'x' * 1001, content_type='text/xml', status=413)


def test_counts_and_clean(app, db):
    for i in range(3):
        add(app, task='echo', input=i)
    failed = add(app, task='fail')
    runAll(db)
    waiting = add(app, task='echo', delay=100)
    data = app.get('/api/counts').json
    assert data['counts']['completed'] == 3
    assert data['counts']['error'] == 1
    assert data['counts']['delayed'] == 1
    assert data['total'] == 5
    assert data['processing'] == {'available': False, 'running': False,
                                  'stats': {}}
    app.post_json('/api/clean', {'status': ['queued']}, status=409)
    result = app.post_json('/api/clean', {'status': ['completed']}).json
    assert (result['removed'], result['more']) == (3, False)
    result = app.post_json('/api/clean', {}).json
    assert (result['removed'], result['more']) == (1, False)
    app.get('/api/jobs/%d' % failed['id'], status=404)
    assert app.get('/api/jobs/%d' % waiting['id']).json['status'] \
        == 'delayed'


def test_clean_in_bounded_steps(app, db):
    def finish(s):
        for i in range(25):
            s.processNext(jobid=s.add('echo', i, now=0), now=1)
    ServiceRunner(db)(finish)
    removed, cursor, answers = 0, None, 0
    while True:
        result = app.post_json('/api/clean', {'status': ['completed'],
                                              'limit': 10,
                                              'cursor': cursor}).json
        answers += 1
        assert result['removed'] <= 10
        removed += result['removed']
        cursor = result['cursor']
        if not result['more']:
            break
    assert (removed, answers) == (25, 3)
    assert app.get('/api/counts').json['total'] == 0
    for bad_limit in (0, 10001, 'all', 2.5, True):
        error = app.post_json('/api/clean', {'limit': bad_limit},
                              status=400).json['error']
        assert error.startswith('limit must be an integer from 1 to 10000')
    error = app.post_json('/api/clean', {'cursor': {'completed': 'x'}},
                          status=400).json['error']
    assert 'must be a job id or null' in error


def test_cron_jobs(app, db):
    job = app.post_json('/api/cronjobs', {
        'task': 'echo', 'input': 'tick', 'minute': [0, 30],
        'hour': [3]}, status=201).json
    assert job['status'] == 'cronjob' and job['cron'] is True
    assert job['schedule']['minute'] == [0, 30]
    eta = time.gmtime(job['eta'])
    assert (eta.tm_hour, eta.tm_min) in ((3, 0), (3, 30))
    edited = app.put_json('/api/cronjobs/%d' % job['id'], {
        'expression': '15 */2 * * *', 'timezone': 'Europe/Berlin',
        'input': 'tock'}).json
    assert edited['schedule']['expression'] == '15 */2 * * *'
    assert edited['input'] == 'tock' and edited['status'] == 'cronjob'
    assert time.gmtime(edited['eta']).tm_min == 15
    app.put_json('/api/cronjobs/%d' % job['id'], {'expression': 'nope'},
                 status=400)
    app.put_json('/api/cronjobs/%d' % job['id'], {'minute': 'x'},
                 status=400)
    # The failed edits left the job as it was.
    assert app.get('/api/jobs/%d' % job['id']).json['schedule'][
        'expression'] == '15 */2 * * *'
    app.post('/api/jobs/%d/cancel' % job['id'])
    revived = app.post('/api/jobs/%d/reschedule' % job['id']).json
    assert revived['status'] == 'cronjob'
    plain = app.post_json('/api/jobs', {'task': 'echo'}).json
    app.put_json('/api/cronjobs/%d' % plain['id'], {'delay': 5}, status=409)
    app.post_json('/api/cronjobs', {'task': 'echo', 'delay': -1},
                  status=400)


def test_paging_filters_and_sorting(app, db):
    ids = [add(app, task='echo' if i % 3 else 'sum', input=[i])['id']
           for i in range(25)]
    runAll(db)
    page = app.get('/api/jobs?limit=10').json
    assert [j['id'] for j in page['jobs']] == ids[::-1][:10]
    assert page['total'] == 25 and page['next'] == ids[-10]
    seen = []
    cursor = ''
    while True:
        page = app.get('/api/jobs?limit=10&sort=id&cursor=%s'
                       % cursor).json
        seen += [j['id'] for j in page['jobs']]
        if page['next'] is None:
            break
        cursor = page['next']
    assert seen == ids
    sums = app.get('/api/jobs?task=sum&limit=100').json
    assert [j['id'] for j in sums['jobs']] == [
        jobid for n, jobid in enumerate(ids) if n % 3 == 0][::-1]
    assert sums['total'] is None
    app.post('/api/jobs/%d/retry' % ids[0], status=409)
    cancelled = add(app, task='echo', delay=50)['id']
    app.post('/api/jobs/%d/cancel' % cancelled)
    only = app.get('/api/jobs?status=cancelled').json
    assert [j['id'] for j in only['jobs']] == [cancelled]
    assert only['total'] == 1


def test_status_and_task_filters_scan_a_bounded_number(app, db,
                                                        monkeypatch):
    monkeypatch.setattr(api, 'SCAN_LIMIT', 10)
    ids = [add(app, task='echo', input=i)['id'] for i in range(25)]
    target = add(app, task='sum', input=[1])['id']
    ids.append(target)
    # The task index alone pages exactly.
    assert [j['id'] for j in app.get('/api/jobs?task=sum').json['jobs']] \
        == [target]
    assert [j['id'] for j in app.get(
        '/api/jobs?task=echo&limit=5&sort=id').json['jobs']] == ids[:5]
    # Status and task: 26 queued jobs are more than SCAN_LIMIT, so the
    # task index is walked and checked against the status index.
    page = app.get('/api/jobs?status=queued&task=echo&sort=id').json
    assert [j['id'] for j in page['jobs']] == ids[:10]
    assert page['scanned'] == 10 and page['next'] == ids[9]
    found = [j['id'] for j in page['jobs']]
    while page['next'] is not None:
        page = app.get('/api/jobs?status=queued&task=echo&sort=id&cursor=%d'
                       % page['next']).json
        assert page['scanned'] <= 10
        found += [j['id'] for j in page['jobs']]
    assert found == ids[:25]
    # A small status index is walked and checked against the task index.
    app.post('/api/jobs/%d/cancel' % ids[3])
    app.post('/api/jobs/%d/cancel' % target)
    page = app.get('/api/jobs?status=cancelled&task=sum').json
    assert [j['id'] for j in page['jobs']] == [target]
    assert page['next'] is None and page['scanned'] == 2
    assert app.get('/api/jobs?status=cancelled&task=nope').json['jobs'] \
        == []


def test_processing_start_stop_with_a_real_processor(db):
    processor = Processor(db, concurrency=1, lease=2.0, poll_interval=0.2,
                          maintenance_interval=1.0, grace=30.0)
    app = webApp(db, processor=processor)
    try:
        assert app.get('/api/processing').json['running'] is False
        assert app.post_json('/api/processing', {'running': True}).json[
            'running'] is True
        job = add(app, task='sum', input=[2, 2])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if app.get('/api/jobs/%d' % job['id']).json['status'] \
                    == 'completed':
                break
            time.sleep(0.05)
        assert app.get('/api/jobs/%d' % job['id']).json['result'] == 4
        assert app.get('/api/counts').json['processing']['stats'][
            'completed'] >= 1
        metrics = app.get('/metrics').text
        assert 'remotetask_processor_running 1.0' in metrics
        assert 'remotetask_processor_events_total{event="completed"} 1.0' \
            in metrics
        sleeper = add(app, task='sleep', input=3)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and app.get(
                '/api/jobs/%d' % sleeper['id']).json['status'] != 'processing':
            time.sleep(0.05)
        app.post_json('/api/processing', {'running': False})
        # While the running job gets its grace period, no restart.
        assert 'stopping' in app.post_json(
            '/api/processing', {'running': True}, status=409).json['error']
        deadline = time.monotonic() + 60
        while processor.running and time.monotonic() < deadline:
            time.sleep(0.05)
        assert app.get('/api/processing').json['running'] is False
        assert app.get('/api/jobs/%d' % sleeper['id']).json['status'] \
            == 'completed'
        app.post_json('/api/processing', {'running': 'no'}, status=400)
    finally:
        if processor.running:
            processor.stop(5)
    nobody = webApp(db)
    nobody.post_json('/api/processing', {'running': True}, status=409)


def test_conflicting_writes_are_retried(app, db):
    """A conflict at commit is retried by pyramid_retry, not a 500."""
    job = add(app, task='echo', input=1)
    from ZODB.POSException import ConflictError
    calls = []
    original = api.jobAction

    def flaky(request):
        calls.append(1)
        if len(calls) == 1:
            raise ConflictError('simulated')
        return original(request)
    import remotetask.web.api as module
    module.jobAction = flaky
    try:
        # Views are registered at make_app time: build a new app.
        fresh = webApp(db)
        assert fresh.post('/api/jobs/%d/cancel' % job['id']).json[
            'status'] == 'cancelled'
    finally:
        module.jobAction = original
    assert len(calls) == 2
    assert ServiceRunner(db)(lambda s: s.getStatus(job['id'])) == 'cancelled'


def test_api_index_and_workers(db, app):
    index = app.get('/api/').json
    assert index['openapi'].endswith('/api/openapi.json')
    from remotetask.version import VERSION
    from remotetask.web.openapi import VERSION as API_VERSION
    assert index['version'] == VERSION
    assert index['api_version'] == API_VERSION
    paths = {(e['method'], e['path']) for e in index['endpoints']}
    assert {('GET', '/api/jobs'), ('POST', '/api/jobs'),
            ('GET', '/api/workers'), ('GET', '/api/')} <= paths
    assert app.get('/api/workers').json == {
        'workers': [], 'unserved': [], 'warnings': []}
    add(app, task='echo', input=1)
    data = app.get('/api/workers').json
    assert data['unserved'] == [{'task': 'echo', 'waiting': 1}]
    assert data['warnings'] == ["1 job of 'echo' waiting; no worker runs it"]
    p = Processor(db, concurrency=1, poll_interval=0.2, heartbeat=0.2,
                  worker_id='panel:1')
    p.start()
    try:
        deadline = time.monotonic() + 30
        while not app.get('/api/workers').json['workers']:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        (worker,) = app.get('/api/workers').json['workers']
        assert (worker['id'], worker['kind']) == ('panel:1', 'thread')
        assert 'echo' in worker['tasks']
        assert [w['id'] for w in call(app, 'getWorkers')] == ['panel:1']
    finally:
        p.stop()
    assert app.get('/api/workers').json['workers'] == []


def test_a_known_url_with_a_method_it_does_not_serve_is_405(db, app):
    response = app.post_json('/api/retention', {'completed': 60}, status=405)
    assert response.headers['Allow'] == 'GET, HEAD, PUT'
    assert response.json['error'] == (
        'POST is not allowed on /api/retention (allowed: GET, HEAD, PUT)')
    response = app.delete('/api/jobs', status=405)
    assert 'POST' in response.headers['Allow'].split(', ')
    # An unknown URL is still 404, and so is an unknown job.
    app.post_json('/api/nothing-here', {}, status=404)
    app.get('/api/jobs/999999', status=404)

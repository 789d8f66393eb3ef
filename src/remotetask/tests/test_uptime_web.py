"""Runaway protection and retention through the JSON API and XML-RPC
(in process, with webtest)."""
import pytest

from remotetask.db import ServiceRunner
from remotetask.tests.webhelpers import db, app  # noqa: F401  fixtures


@pytest.mark.parametrize('eta', [1e18, 1e30, 2 ** 63, 1e308])
def test_eta_past_the_horizon_is_400(app, eta):
    response = app.post_json('/api/jobs', {'task': 'echo', 'eta': eta},
                             status=400)
    assert 'eta' in response.json['error']
    assert app.get('/api/counts').json['total'] == 0


def test_delay_past_the_horizon_is_400(app):
    response = app.post_json('/api/jobs', {'task': 'echo', 'delay': 1e308},
                             status=400)
    assert 'delay' in response.json['error']


def test_runaway_cron_job_is_400(app):
    response = app.post_json('/api/cronjobs', {'task': 'echo',
                                               'interval': 1e-9}, status=400)
    assert 'once a second' in response.json['error']
    assert app.get('/api/counts').json['total'] == 0


def test_cancel_of_a_processing_job_is_202_and_ends_it(app, db):
    runner = ServiceRunner(db)
    jobid = app.post_json('/api/jobs', {'task': 'echo', 'input': 1},
                          status=201).json['id']
    runner(lambda s: s.claim())
    response = app.post_json('/api/jobs/%d/cancel' % jobid, {}, status=202)
    assert response.json['status'] == 'processing'
    app.delete('/api/jobs/%d' % jobid, status=409)

    def finish(s):
        return s.run(s.jobs[jobid])
    assert runner(finish) == 'cancelled'
    assert app.get('/api/jobs/%d' % jobid).json['status'] == 'cancelled'
    # A waiting job is cancelled at once: 200.
    other = app.post_json('/api/jobs', {'task': 'echo', 'delay': 60},
                          status=201).json['id']
    assert app.post_json('/api/jobs/%d/cancel' % other, {},
                         status=200).json['status'] == 'cancelled'


# -- retention ----------------------------------------------------------------

def test_retention_is_shown_and_set(app):
    shown = app.get('/api/retention').json
    assert shown['retention'] == {'completed': 86400, 'error': 604800,
                                  'cancelled': 86400}
    assert shown['defaults'] == shown['retention']
    assert shown['removed'] == {'retention': 0, 'clean': 0, 'delete': 0}
    shown = app.put_json('/api/retention', {'completed': 60,
                                            'error': None}).json
    assert shown['retention'] == {'completed': 60, 'error': None,
                                  'cancelled': 86400}
    assert app.get('/api/retention').json['retention']['completed'] == 60


@pytest.mark.parametrize('data, message', [
    ({'completed': -1}, 'completed'),
    ({'completed': 'a day'}, 'completed'),
    ({'error': True}, 'error'),
    ({'queued': 5}, 'unknown field'),
])
def test_bad_retention_is_400_and_changes_nothing(app, data, message):
    data = dict(data, cancelled=5) if 'cancelled' not in data else data
    response = app.put_json('/api/retention', data, status=400)
    assert message in response.json['error']
    assert app.get('/api/retention').json['retention']['cancelled'] == 86400


def test_removed_jobs_are_in_metrics(app, db):
    runner = ServiceRunner(db)
    ids = [app.post_json('/api/jobs', {'task': 'echo', 'input': n},
                         status=201).json['id'] for n in range(3)]
    runner(lambda s: s.process())
    app.delete('/api/jobs/%d' % ids[0])
    app.post_json('/api/clean', {'status': ['completed']})
    text = app.get('/metrics').text
    assert 'remotetask_jobs_removed_total{reason="delete"} 1.0' in text
    assert 'remotetask_jobs_removed_total{reason="clean"} 2.0' in text
    assert 'remotetask_jobs_removed_total{reason="retention"} 0.0' in text


def test_the_page_has_the_retention_card_and_its_script(app):
    page = app.get('/').text
    assert 'id="retention"' in page and 'uptime.js' in page
    script = app.get('/static/uptime.js').text
    assert "'api/retention'" in script and "'api/health'" in script


def test_health_says_whether_the_disk_is_full(app):
    from remotetask import health
    assert app.get('/api/health').json['disk_full'] is False
    health.STATE.noteFull(OSError(28, 'No space left on device'))
    try:
        shown = app.get('/api/health').json
        assert shown['disk_full'] is True
        assert 'No space left on device' in shown['error']
        assert 'remotetask_storage_disk_full 1.0' in app.get('/metrics').text
    finally:
        health.STATE.noteCommitted()

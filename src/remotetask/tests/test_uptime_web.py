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

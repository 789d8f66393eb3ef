"""Acceptance review of the web service: bad numbers, sorting by status and
task, responses checked against the OpenAPI document."""
import json
import math
import xmlrpc.client

import pytest

from remotetask.db import ServiceRunner
from remotetask.interfaces import STATUSES
from remotetask.tests.webhelpers import call, exampleDB, runAll, webApp


@pytest.fixture
def db():
    database = exampleDB()
    yield database
    database.close()


@pytest.fixture
def app(db):
    return webApp(db)


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

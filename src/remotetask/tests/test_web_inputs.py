"""Every bad input a 4xx or a named XML-RPC fault; headers and types of
every response (issue 11, the rows of its table about inputs)."""
import os
import xmlrpc.client

import pytest

from remotetask.db import ServiceRunner
from remotetask.interfaces import InvalidInputError, InvalidScheduleError
from remotetask.numbers import checkNumber
from remotetask.tests.webhelpers import (
    basic, call, runAll, runCommand, usersFile, webApp)
from remotetask.tests.webhelpers import db, app  # noqa: F401  fixtures
from remotetask.web import xmlrpc as rpc

HUGE = '9' * 400


def count(db):
    return ServiceRunner(db)(lambda service: service.count())


def post(app, path, text, status, content_type='application/json'):
    return app.post(path, text, content_type=content_type, status=status)


# -- Numbers ------------------------------------------------------------------

@pytest.mark.parametrize('path, field, body', [
    ('/api/jobs', 'delay', '{"task": "echo", "delay": %s}'),
    ('/api/jobs', 'eta', '{"task": "echo", "eta": %s}'),
    ('/api/jobs', 'time_limit', '{"task": "echo", "time_limit": %s}'),
    ('/api/jobs', 'max_retries', '{"task": "echo", "max_retries": %s}'),
    ('/api/jobs', 'max_starts', '{"task": "echo", "max_starts": %s}'),
    ('/api/cronjobs', 'delay', '{"task": "echo", "delay": %s}'),
    ('/api/clean', 'before', '{"before": %s}'),
])
def test_a_400_digit_integer_is_400_naming_the_field(app, db, path, field,
                                                     body):
    for value in (HUGE, '-' + HUGE):
        response = post(app, path, body % value, status=400)
        assert response.json['error'].startswith(field + ' must be'), \
            response.json
    assert count(db) == 0


def test_a_400_digit_integer_as_a_cron_delay_over_xmlrpc(app, db):
    # (xmlrpc.client will not send one; other clients may.)
    empty = '<param><value><array><data/></array></value></param>'
    for value in ('<int>%s</int>' % HUGE, '<i8>-%s</i8>' % HUGE,
                  '<double>1e400</double>', '<double>nan</double>'):
        body = ('<methodCall><methodName>addCronJob</methodName><params>'
                '<param><value>echo</value></param><param><value><nil/>'
                '</value></param>%s<param><value>%s</value></param>'
                '</params></methodCall>' % (empty * 5, value))
        code, message = fault(app, body)
        assert code == rpc.INVALID_SCHEDULE, message
        assert message.startswith('delay must be a positive finite number')
    assert count(db) == 0


def test_the_service_checks_numbers_of_any_size():
    for value in (10 ** 400, -10 ** 400, float('nan'), float('inf')):
        with pytest.raises(InvalidInputError, match='^delay must be'):
            checkNumber('delay', value)
    with pytest.raises(InvalidInputError, match='about 5001 digits'):
        checkNumber('max_retries', 10 ** 5000, 0, integer=True, high=10)
    assert checkNumber('max_retries', 10 ** 400, 0, integer=True) == \
        10 ** 400
    assert checkNumber('n', 2.0, integer=True, integral=True) == 2
    with pytest.raises(InvalidScheduleError):
        checkNumber('delay', 10 ** 400, error=InvalidScheduleError)


@pytest.mark.parametrize('key', ['true', '1', '[]', '{}', '1.5'])
def test_a_unique_key_that_is_no_string_is_400(app, db, key):
    # (found by the fuzz run: it was looked up in a BTree of strings, 500)
    response = post(app, '/api/jobs', '{"task": "echo", "unique_key": %s}'
                    % key, status=400)
    assert response.json['error'].startswith('unique_key must be')
    post(app, '/api/jobs', '{"task": "echo", "unique_key": "k"}', status=201)
    post(app, '/api/jobs', '{"task": "echo", "unique_key": %s}' % key,
         status=400)
    assert count(db) == 1


def test_integers_must_fit_64_bits_in_the_api(app, db):
    response = post(app, '/api/jobs', '{"task": "echo", "max_retries": %d}'
                    % 2 ** 63, status=400)
    assert 'max_retries must be <=' in response.json['error']
    post(app, '/api/jobs', '{"task": "echo", "max_retries": %d}'
         % (2 ** 63 - 1), status=201)


# -- URLs ---------------------------------------------------------------------

@pytest.mark.parametrize('url', ['/%ff', '/api/jobs/%ff', '/api/%c3%28',
                                 '/api/jobs?status=%ff', '/static/%fe',
                                 '/RPC2/%ff', '/login?next=%80'])
def test_undecodable_urls_are_400(db, tmp_path, url):
    for app in (webApp(db), webApp(db, users=usersFile(tmp_path)[0],
                                   remote='192.0.2.1')):
        response = app.get(url, status=400)
        assert response.json == {
            'error': 'the URL is not UTF-8 (after decoding its %-escapes)',
            'status': 400}
        assert response.headers['X-Content-Type-Options'] == 'nosniff'


# -- XML-RPC ------------------------------------------------------------------

def bomb(levels=6, width=10):
    """The table's billion laughs: 6 levels of 10 entities, some 600
    bytes that expand to 3,000,000 characters."""
    entities = ['<!ENTITY e0 "%s">' % ('x' * 30)] + [
        '<!ENTITY e%d "%s">' % (i, '&e%d;' % (i - 1) * width)
        for i in range(1, levels)]
    return ('<?xml version="1.0"?><!DOCTYPE m [%s]><methodCall><methodName>'
            'add</methodName><params><param><value><string>echo</string>'
            '</value></param><param><value><string>&e%d;</string></value>'
            '</param></params></methodCall>'
            % (''.join(entities), levels - 1))


def fault(app, body):
    response = app.post('/RPC2', body, content_type='text/xml')
    with pytest.raises(xmlrpc.client.Fault) as info:
        xmlrpc.client.loads(response.body)
    return info.value.faultCode, info.value.faultString


def test_xml_entities_are_refused_before_they_expand(app, db):
    assert len(bomb()) < 700
    code, message = fault(app, bomb())
    assert code == rpc.PARSE_ERROR
    assert 'EntitiesForbidden' in message or 'entit' in message.lower()
    assert count(db) == 0
    external = ('<?xml version="1.0"?><!DOCTYPE m [<!ENTITY x SYSTEM '
                '"file:///etc/passwd">]><methodCall><methodName>add'
                '</methodName><params><param><value><string>&x;</string>'
                '</value></param></params></methodCall>')
    assert fault(app, external)[0] == rpc.PARSE_ERROR
    assert count(db) == 0


def test_the_decoded_request_is_limited_too():
    body = xmlrpc.client.dumps(('echo', 'x' * 5000), 'add').encode()
    with pytest.raises(rpc.RequestTooLarge, match='larger than the limit'):
        rpc.parse(body, limit=4000)
    assert rpc.parse(body, limit=len(body))[1] == 'add'


def test_nesting_20000_deep_is_a_named_fault(app):
    deep = '<value><array><data>' * 20000 + '</data></array></value>' * 20000
    body = ('<methodCall><methodName>getStatus</methodName><params><param>'
            '%s</param></params></methodCall>' % deep)
    code, message = fault(app, body)
    assert (code, message) == (rpc.PARSE_ERROR, 'refused: arrays and '
                               'structs nest deeper than 32')
    shallow = [[[1]]]
    with pytest.raises(xmlrpc.client.Fault) as info:
        call(app, 'getStatus', shallow)
    assert (info.value.faultCode, info.value.faultString) == (
        rpc.BAD_ARGUMENTS, 'jobid must be an integer (a job id), not [[[1]]]')


@pytest.mark.parametrize('method, params, message', [
    ('addCronJob', ('echo', None, [], [], [], [], [], None, 123),
     'expression must be a string or nil, not 123'),
    ('addCronJob', ('echo', None, [], [], [], [], [], None, '* * * * *', 7),
     'timezone must be a string or nil, not 7'),
    ('addCronJob', ('echo', None, [], [], [], [], [], 'soon'),
     "delay must be a number or nil, not 'soon'"),
    ('addCronJob', ('echo', None, [], [], [], [], [], None, None, None,
                    [60]), 'interval must be a number or nil, not [60]'),
    ('addCronJob', ('echo', None, ['1']),
     "minute must be an array of integers, not ['1']"),
    ('addCronJob', ('echo', None, [], [], [], [], {'a': 1}),
     "dayOfWeek must be an array of integers, not a struct {'a': 1}"),
    ('add', ('echo', 1, 'yes'), "options must be a struct, not 'yes'"),
    ('add', (['echo'],), "task must be a string (a task name), not "
                         "['echo']"),
    ('getTaskStatusByIdentifier', (1, 'x'),
     'type must be a string (a task type), not 1'),
    ('getTaskResponse', ('T', None),
     'identifier must be a string (a task identifier), not None'),
    ('system.methodHelp', (5,),
     'name must be a string (a method name), not 5'),
])
def test_a_wrong_argument_is_a_fault_naming_it(app, db, method, params,
                                               message):
    with pytest.raises(xmlrpc.client.Fault) as info:
        call(app, method, *params)
    assert (info.value.faultCode, info.value.faultString) == (
        rpc.BAD_ARGUMENTS, message)
    assert count(db) == 0


def test_lone_surrogates_are_refused_when_added(app, db):
    for path, body in (('/api/jobs', '{"task": "echo", "input": "\\ud800"}'),
                       ('/api/jobs', '{"task": "echo", "input": {"k": '
                                     '["a\\uDFFF"]}}'),
                       ('/api/cronjobs', '{"task": "echo", "input": '
                                         '"\\ud800", "minute": [1]}')):
        response = post(app, path, body, status=400)
        assert 'can not be encoded' in response.json['error']
    assert count(db) == 0
    # A proper pair is a character like any other.
    job = post(app, '/api/jobs', '{"task": "echo", "input": "\\ud83d\\ude00"}',
               status=201).json
    assert job['input'] == '\U0001F600'


def test_the_service_refuses_lone_surrogates_too(db):
    with pytest.raises(InvalidInputError, match='UnicodeEncodeError'):
        ServiceRunner(db)(lambda s: s.add('echo', {'k': ['\ud800']}))
    with pytest.raises(InvalidInputError, match='meta data'):
        ServiceRunner(db)(lambda s: s.add('echo', 1, meta={'\udfff': 1}))
    assert count(db) == 0


def test_a_result_xmlrpc_can_not_send_is_a_named_fault(app, db):
    # A result set behind the service's back is still never an internal
    # error when read.
    jobid = ServiceRunner(db)(lambda s: s.add('echo', 'x'))
    runAll(db)

    def spoil(service):
        service.jobs[jobid].output = '\ud800'
    ServiceRunner(db)(spoil)
    with pytest.raises(xmlrpc.client.Fault) as info:
        call(app, 'getResult', jobid)
    assert info.value.faultCode == rpc.INVALID_INPUT
    assert 'can not be sent over XML-RPC: UnicodeEncodeError' in \
        info.value.faultString


def test_a_fault_packet_as_a_request_is_a_parse_error(app):
    body = xmlrpc.client.dumps(xmlrpc.client.Fault(1, 'x'),
                               methodresponse=True)
    assert fault(app, body)[0] == rpc.PARSE_ERROR


# -- Headers and types --------------------------------------------------------

def test_every_response_says_nosniff(app, db, tmp_path):
    jobid = call(app, 'add', 'echo', 1)
    responses = [
        app.get('/'), app.get('/static/app.js'), app.get('/api/me'),
        app.get('/api/jobs/%d' % jobid), app.get('/api/jobs/999', status=404),
        app.get('/metrics'), app.get('/nowhere', status=404),
        app.get('/RPC2', status=405),
        app.post('/RPC2', xmlrpc.client.dumps((), 'getAvailableTasks'),
                 content_type='text/xml'),
        app.post('/api/jobs', 'x' * (2 << 20), status=413,
                 content_type='application/json'),
        app.get('/api/me', headers={'Host': 'evil.example'}, status=401),
    ]
    users = webApp(db, users=usersFile(tmp_path)[0])
    responses += [users.get('/login'), users.get('/api/me', status=401),
                  users.get('/', status=302),
                  users.get('/api/me', headers=basic('mia', 'mia-pw'))]
    for response in responses:
        assert response.headers['X-Content-Type-Options'] == 'nosniff', \
            response.request.url


def test_error_bodies_are_json_and_echo_no_markup(app):
    for url in ('/<script>alert(1)</script>', '/api/<script>',
                '/static/<script>.js', '/x?<script>'):
        response = app.get(url, status=404)
        assert response.content_type == 'application/json', url
        assert '<script>' not in response.text
        assert response.json['status'] == 404


def test_a_bad_csrf_token_is_a_json_400(db, tmp_path):
    app = webApp(db, users=usersFile(tmp_path)[0])
    response = app.post('/login', {'name': '<b>', 'csrf_token': 'forged'},
                        status=400)
    assert response.json['status'] == 400
    assert 'CSRF' in response.json['error']


def test_the_json_api_answers_415_to_other_bodies(app, db):
    for content_type in ('text/plain', 'application/x-www-form-urlencoded',
                         'text/xml', 'application/jsonx'):
        response = post(app, '/api/jobs', '{"task": "echo"}', status=415,
                        content_type=content_type)
        assert 'must be application/json, not %s' % content_type in \
            response.json['error']
    app.post('/api/jobs', b'{"task": "echo"}', status=415)   # no type
    assert count(db) == 0
    post(app, '/api/jobs', '{"task": "echo"}', status=201,
         content_type='application/json; charset=utf-8')
    # No body, no type needed.
    jobid = call(app, 'add', 'echo', 1)
    app.post('/api/jobs/%d/cancel' % jobid, status=200)


def test_serve_warns_of_a_users_file_others_can_read(tmp_path):
    import socket
    path = usersFile(tmp_path)[0]
    os.chmod(path, 0o644)
    with socket.socket() as busy:           # serve stops after the check
        busy.bind(('127.0.0.1', 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        code, out = runCommand(['serve', '--db', str(tmp_path / 'D.fs'),
                                '--users', path, '--port', port],
                               stderr=True)
        assert code == 1
        assert 'users file %s can be read by others (mode 644)' % path \
            in out
        os.chmod(path, 0o666)
        code, out = runCommand(['serve', '--db', str(tmp_path / 'D.fs'),
                                '--users', path, '--port', port],
                               stderr=True)
        assert 'can be written by others (mode 666)' in out
        os.chmod(path, 0o600)
        code, out = runCommand(['serve', '--db', str(tmp_path / 'D.fs'),
                                '--users', path, '--port', port],
                               stderr=True)
        assert 'by others' not in out

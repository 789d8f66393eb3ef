"""Access control: users file, roles, Basic, tokens, the login form and
CSRF, anonymous loopback mode, cross-site requests."""
import json
import re

import pytest
import xmlrpc.client

from remotetask.tests.webhelpers import (
    basic, bearer, call, exampleDB, runCommand, usersFile, webApp)
from remotetask.tests.webhelpers import db  # noqa: F401  fixtures
from remotetask.web.auth import Users, checkPassword, hashPassword


@pytest.fixture
def users(tmp_path):
    return usersFile(tmp_path)


@pytest.fixture
def app(db, users):
    return webApp(db, users=users[0])


MIA = basic('mia', 'mia-pw')
VIC = basic('vic', 'vic-pw')


def test_password_hashes():
    stored = hashPassword('secret')
    assert stored.startswith('scrypt$') and 'secret' not in stored
    assert checkPassword('secret', stored)
    assert not checkPassword('Secret', stored)
    assert not checkPassword('secret', 'garbage')
    assert hashPassword('secret') != stored  # salted


def test_user_commands(tmp_path):
    path = str(tmp_path / 'u.json')
    code, out = runCommand(['user', 'add', '--users', path, 'ann',
                            '--role', 'viewer'], stdin='pw one\n')
    assert code == 0, out
    data = json.load(open(path))
    assert data['users']['ann']['role'] == 'viewer'
    assert 'pw one' not in open(path).read()
    assert Users(path).authenticate('ann', 'pw one') == ('ann', 'viewer')
    assert Users(path).authenticate('ann', 'pw') is None
    code, out = runCommand(['user', 'token', '--users', path, 'ann'])
    token = out.strip()
    assert code == 0 and token.startswith('rt_')
    assert token not in open(path).read()
    assert Users(path).byToken(token) == ('ann', 'viewer')
    code, out = runCommand(['user', 'add', '--users', path, 'bob',
                            '--role', 'admin'], stdin='x\n')
    assert code == 2
    code, out = runCommand(['user', 'add', '--users', path, 'bob',
                            '--role', 'manager'], stdin='\n')
    assert code == 1
    code, out = runCommand(['user', 'list', '--users', path])
    assert out == 'ann\tviewer\t1 token(s)\n'
    code, out = runCommand(['user', 'remove', '--users', path, 'ann'])
    assert code == 0 and Users.read(path) == {}


def test_the_users_file_from_the_environment(tmp_path, monkeypatch):
    path = str(tmp_path / 'env-users.json')
    monkeypatch.setenv('REMOTETASK_USERS', path)
    code, out = runCommand(['user', 'add', 'ann', '--role', 'manager'],
                           stdin='pw-12345678\n')
    assert code == 0, out
    code, out = runCommand(['user', 'list'])
    assert out == 'ann\tmanager\t0 token(s)\n'
    # --users still wins over the environment.
    other = str(tmp_path / 'other.json')
    code, out = runCommand(['user', 'add', '--users', other, 'bob',
                            '--role', 'viewer'], stdin='pw-12345678\n')
    assert code == 0 and 'bob' in Users.read(other)
    assert 'bob' not in Users.read(path)


def test_a_users_file_that_can_not_be_written_is_a_clear_error(tmp_path):
    # Its directory does not exist: an error naming the file, no traceback.
    path = str(tmp_path / 'nodir' / 'u.json')
    code, out = runCommand(['user', 'add', '--users', path, 'ann',
                            '--role', 'viewer'], stdin='pw-12345678\n',
                           stderr=True)
    assert code == 1, out
    assert 'can not write users file %s' % path in out
    assert 'No such file or directory' in out
    assert 'Traceback' not in out
    assert not (tmp_path / 'nodir').exists()


def test_anonymous_is_401_everywhere(app):
    for path in ('/api/jobs', '/api/counts', '/metrics',
                 '/api/openapi.json'):
        response = app.get(path, status=401)
        assert response.headers['WWW-Authenticate'] == \
            'Basic realm="remotetask"'
    app.post('/RPC2', xmlrpc.client.dumps((), 'getAvailableTasks'),
             content_type='text/xml', status=401)
    assert app.get('/', status=302).location.endswith('/login')
    # The page's own requests get no Basic challenge (no browser dialog).
    response = app.get('/api/jobs', status=401,
                       headers={'X-Requested-With': 'remotetask'})
    assert 'WWW-Authenticate' not in response.headers


def test_wrong_credentials_are_401(app, users):
    app.get('/api/jobs', headers=basic('mia', 'nope'), status=401)
    app.get('/api/jobs', headers=basic('zed', 'mia-pw'), status=401)
    app.get('/api/jobs', headers=bearer('rt_forged'), status=401)
    app.get('/api/jobs', headers={'Authorization': 'Basic !!!'}, status=401)
    app.get('/api/jobs', headers={'Authorization': 'Digest x'}, status=401)


def test_viewer_reads_but_may_not_change(app):
    assert app.get('/api/counts', headers=VIC).json['total'] == 0
    response = app.post_json('/api/jobs', {'task': 'echo'}, headers=VIC,
                             status=403)
    assert response.json['error'] == \
        'a viewer may not do this (only a manager may)'
    assert call(app, 'getAvailableTasks', headers=VIC) == [
        'echo', 'fail', 'sleep', 'sum']
    call(app, 'add', 'echo', 1, headers=VIC, status=403)
    app.post_json('/api/clean', {}, headers=VIC, status=403)
    app.post_json('/api/processing', {'running': True}, headers=VIC,
                  status=403)
    assert app.get('/api/counts', headers=VIC).json['total'] == 0
    assert app.get('/metrics', headers=VIC).status_int == 200


def test_manager_with_basic_and_token(app, users):
    job = app.post_json('/api/jobs', {'task': 'echo'}, headers=MIA,
                        status=201).json
    jobid = call(app, 'add', 'echo', 'hi', headers=bearer(users[1]))
    assert call(app, 'getStatus', jobid, headers=VIC) == 'queued'
    assert app.get('/api/me', headers=bearer(users[1])).json['via'] \
        == 'token'
    app.post('/api/jobs/%d/cancel' % job['id'], headers=MIA)


def test_users_file_changes_apply_without_restart(app, users, tmp_path):
    from remotetask.web.auth import addUser
    app.get('/api/counts', headers=basic('new', 'new-pw'), status=401)
    addUser(users[0], 'new', 'new-pw', 'viewer')
    app.get('/api/counts', headers=basic('new', 'new-pw'))


def csrfOf(page):
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)


def test_login_form_session_and_csrf(app):
    form = app.get('/login')
    assert form.content_type == 'text/html'
    token = csrfOf(form)
    # No CSRF token: refused.
    app.post('/login', {'name': 'mia', 'password': 'mia-pw'}, status=400)
    bad = app.post('/login', {'name': 'mia', 'password': 'no',
                              'csrf_token': token}, status=401)
    assert 'Wrong user name or password' in bad.text
    done = app.post('/login', {'name': 'mia', 'password': 'mia-pw',
                               'csrf_token': token}, status=303)
    assert done.location.endswith('/')
    page = app.get('/')
    assert 'app.js' in page.text
    assert page.headers['X-Frame-Options'] == 'DENY'
    assert page.content_type == 'text/html'
    me = app.get('/api/me').json
    assert (me['name'], me['role'], me['via']) == ('mia', 'manager',
                                                    'session')
    # A session-authenticated change needs the session's CSRF token.
    app.post_json('/api/jobs', {'task': 'echo'}, status=400)
    app.post_json('/api/jobs', {'task': 'echo'}, status=400,
                  headers={'X-CSRF-Token': token})  # the old one
    app.post_json('/api/jobs', {'task': 'echo'}, status=201,
                  headers={'X-CSRF-Token': me['csrf_token']})
    app.post('/logout', {'csrf_token': me['csrf_token']}, status=303)
    app.get('/api/me', status=401)


def test_cross_site_requests_are_refused(app):
    app.post_json('/api/jobs', {'task': 'echo'}, headers=dict(
        MIA, Origin='http://evil.example'), status=403)
    app.post_json('/api/jobs', {'task': 'echo'}, headers=dict(
        MIA, **{'Sec-Fetch-Site': 'cross-site'}), status=403)
    app.post_json('/api/jobs', {'task': 'echo'}, headers=dict(
        MIA, Origin='http://localhost'), status=201)
    app.post_json('/api/jobs', {'task': 'echo'}, headers=dict(
        MIA, **{'Sec-Fetch-Site': 'same-origin'}), status=201)


def test_anonymous_mode_is_loopback_only(db):
    local = webApp(db)
    assert local.get('/api/me').json['role'] == 'manager'
    assert call(local, 'add', 'echo', 1) > 0
    local.get('/login', status=302)
    for host in ('127.0.0.1:8080', '[::1]:8080', 'localhost'):
        local.get('/api/me', headers={'Host': host})
    # DNS rebinding: a foreign name resolving to 127.0.0.1 is refused.
    assert 'loopback host name' in local.get(
        '/api/me', headers={'Host': 'evil.example:8080'},
        status=401).json['error']
    remote = webApp(db, remote='192.0.2.7')
    response = remote.get('/api/counts', status=401)
    assert 'loopback' in response.json['error']
    call(remote, 'getAvailableTasks', status=401)


def test_serve_refuses_to_listen_elsewhere_without_users(tmp_path):
    code, out = runCommand(['serve', '--db', str(tmp_path / 'D.fs'),
                            '--host', '0.0.0.0'])
    assert code == 2
    assert not (tmp_path / 'D.fs').exists()
    empty = tmp_path / 'empty.json'
    empty.write_text('{"users": {}}')
    code, out = runCommand(['serve', '--db', str(tmp_path / 'D.fs'),
                            '--users', str(empty)])
    assert code == 2


def test_serve_reports_a_port_in_use(tmp_path):
    import socket
    with socket.socket() as busy:
        busy.bind(('127.0.0.1', 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, out = runCommand(['serve', '--db', str(tmp_path / 'D.fs'),
                                '--port', str(port)], stderr=True)
    assert code == 1
    # The message names the address (errno's text alone does not).
    assert 'can not listen on 127.0.0.1 port %d: ' % port in out, out
    assert 'Traceback' not in out

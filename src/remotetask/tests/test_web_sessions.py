"""Sessions that end, revoked tokens, throttled guessing and user names
that can not be told apart by time (issue 11, the rows of its table about
sessions and logins)."""
import hashlib
import re

import pytest
import webtest

from remotetask.tests.webhelpers import (
    basic, bearer, call, runCommand, usersFile, webApp)
from remotetask.tests.webhelpers import db  # noqa: F401  fixtures
from remotetask.web import auth
from remotetask.web.sessions import Sessions
from remotetask.web.throttle import Throttle


class Clock:
    """A clock the test moves by hand."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def users(tmp_path):
    return usersFile(tmp_path)


@pytest.fixture
def app(db, users):
    return webApp(db, users=users[0])


def registry(app):
    return app.app.app.registry.remotetask


def csrfOf(page):
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)


def logIn(app, name='mia', password='mia-pw'):
    """Log in through the form; return the CSRF token of the session."""
    token = csrfOf(app.get('/login'))
    app.post('/login', {'name': name, 'password': password,
                        'csrf_token': token}, status=303)
    return app.get('/api/me').json['csrf_token']


def fromAddress(app, address):
    """The same application, from another client address."""
    return webtest.TestApp(app.app, extra_environ={'REMOTE_ADDR': address})


def addJob(app, csrf, status):
    return app.post_json('/api/jobs', {'task': 'echo'}, status=status,
                         headers={'X-CSRF-Token': csrf})


# -- Sessions end -------------------------------------------------------------

@pytest.mark.parametrize('change', [
    ['user', 'remove', 'mia'],
    ['user', 'add', 'mia', '--role', 'viewer'],     # demoted, same password
    ['user', 'add', 'mia', '--role', 'manager'],    # password set again
])
def test_a_users_file_change_ends_the_session_at_once(app, users, change):
    csrf = logIn(app)
    addJob(app, csrf, 201)
    argv = change[:2] + ['--users', users[0]] + change[2:]
    code, out = runCommand(argv, stdin='mia-pw\n')
    assert code == 0, out
    # The very next request, with nothing else in between, is refused.
    addJob(app, csrf, 401)
    app.get('/api/me', status=401)
    assert len(registry(app).sessions) == 0


def test_an_old_cookie_is_worth_nothing_after_logout(app):
    csrf = logIn(app)
    cookie = app.cookies['remotetask_session']
    app.post('/logout', {'csrf_token': csrf}, status=303)
    app.get('/api/me', status=401)
    # Replayed, with its CSRF token: still nobody.
    app.set_cookie('remotetask_session', cookie)
    app.get('/api/me', status=401)
    addJob(app, csrf, 401)
    assert call(app, 'getAvailableTasks', status=401)


def test_sessions_expire_when_idle_and_at_their_maximum(db, users):
    app = webApp(db, users=users[0], session_idle=60, session_max=300)
    clock = Clock()
    registry(app).sessions.clock = clock
    logIn(app)
    for step in range(4):               # busy: 4 x 59 s < 300 s
        clock.now += 59
        app.get('/api/me')
    clock.now += 61                     # idle for longer than 60 s
    app.get('/api/me', status=401)
    logIn(app)
    for step in range(5):
        clock.now += 59
        app.get('/api/me')
    clock.now += 10                     # 305 s after the login
    app.get('/api/me', status=401)


def test_session_records_are_bounded_and_made_only_by_logins(db, users):
    sessions = Sessions(idle=10, maximum=100, limit=3, clock=Clock())
    entry = {'role': 'manager', 'password': 'x'}
    sids = [sessions.create('mia', entry) for i in range(5)]
    assert len(sessions) == 3
    assert sessions.user(sids[0], {'mia': entry}.get) is None
    assert sessions.user(sids[4], {'mia': entry}.get) == 'mia'
    entries = {'mia': entry, 'vic': entry}.get
    sessions = Sessions(limit=10, perUser=2, clock=Clock())
    vic = sessions.create('vic', entry)
    mias = [sessions.create('mia', entry) for i in range(5)]
    assert len(sessions) == 3 and sessions.user(vic, entries) == 'vic'
    assert [sessions.user(sid, entries) for sid in mias] == [
        None, None, None, 'mia', 'mia']
    app = webApp(db, users=users[0])
    for i in range(20):                 # anonymous visitors cost nothing
        app.get('/login')
        app.get('/api/me', status=401)
    assert len(registry(app).sessions) == 0


def test_a_revoked_token_is_refused_at_once(app, users):
    path, token = users
    assert app.get('/api/me', headers=bearer(token)).json['name'] == 'mia'
    code, out = runCommand(['user', 'token', 'list', '--users', path, 'mia'])
    (tokenid,) = out.split()
    code, out = runCommand(['user', 'token', 'revoke', '--users', path,
                            'mia', tokenid])
    assert code == 0 and tokenid in out
    app.get('/api/me', headers=bearer(token), status=401)
    # By the token itself, or all of them.
    code, out = runCommand(['user', 'token', '--users', path, 'mia'])
    second = out.split()[0]
    app.get('/api/me', headers=bearer(second))
    code, out = runCommand(['user', 'token', 'revoke', '--users', path,
                            'mia', second])
    assert code == 0
    app.get('/api/me', headers=bearer(second), status=401)
    code, out = runCommand(['user', 'token', 'revoke', '--users', path,
                            'mia', 'nope'])
    assert code == 1
    code, out = runCommand(['user', 'token', 'revoke', '--users', path,
                            'mia'])
    assert code == 2        # ids or --all: never all by accident


# -- Throttled guessing ------------------------------------------------------

def test_the_right_password_after_25_wrong_ones_backs_off(db, users):
    app = webApp(db, users=users[0])
    clock = Clock()
    registry(app).throttle.clock = clock
    statuses = [app.get('/api/me', headers=basic('mia', 'guess%d' % i),
                        status='*').status_int for i in range(25)]
    assert statuses[:5] == [401] * 5 and set(statuses[5:]) == {429}
    response = app.get('/api/me', headers=basic('mia', 'mia-pw'), status=429)
    assert int(response.headers['Retry-After']) >= 1
    assert 'too many failed logins' in response.json['error']
    # Another user from another address is not held up...
    other = fromAddress(app, '192.0.2.9')
    assert other.get('/api/me', headers=basic('vic', 'vic-pw')).json[
        'name'] == 'vic'
    # ... mia from there is (her name backs off), except with her token.
    other.get('/api/me', headers=basic('mia', 'mia-pw'), status=429)
    other.get('/api/me', headers=bearer(users[1]))
    # Once the back-off has passed, the right password works again.
    clock.now += 120
    assert app.get('/api/me', headers=basic('mia', 'mia-pw')).json[
        'role'] == 'manager'


def test_the_login_form_and_tokens_back_off_too(db, users):
    app = webApp(db, users=users[0])
    token = csrfOf(app.get('/login'))
    for i in range(6):
        app.post('/login', {'name': 'vic', 'password': 'x%d' % i,
                            'csrf_token': token}, status='*')
    page = app.post('/login', {'name': 'vic', 'password': 'vic-pw',
                               'csrf_token': token}, status=429)
    assert 'Too many failed logins' in page.text
    assert page.headers['Retry-After']
    # Forged tokens: per address.
    tokens = fromAddress(app, '192.0.2.10')
    for i in range(6):
        tokens.get('/api/me', headers=bearer('rt_forged%d' % i), status='*')
    tokens.get('/api/me', headers=bearer(users[1]), status=429)


def test_a_shut_key_costs_no_scrypt(db, users, monkeypatch):
    """The table's "155 wrong passwords from 8 threads" raised everybody's
    latency: each guess ran scrypt.  While a key backs off, none runs."""
    app = webApp(db, users=users[0])
    calls = []
    real = hashlib.scrypt
    monkeypatch.setattr(auth.hashlib, 'scrypt',
                        lambda *a, **kw: calls.append(1) or real(*a, **kw))
    for i in range(40):
        app.get('/api/me', headers=basic('mia', 'guess%d' % i), status='*')
    assert len(calls) == 5      # the free attempts only


def test_throttle_backs_off_doubling_and_forgets():
    clock = Clock()
    throttle = Throttle(free=2, base=1, cap=8, forget=100, clock=clock)
    key = ('address', '192.0.2.1')
    waits = []
    for i in range(7):
        throttle.failed(key)
        waits.append(throttle.wait(key))
    assert waits == [0, 1, 2, 4, 8, 8, 8]
    clock.now += 101
    assert throttle.wait(key) == 0
    throttle.failed(key)
    assert throttle.wait(key) == 0      # counting starts again
    small = Throttle(limit=10, clock=clock)
    for i in range(50):
        small.failed(('address', str(i)))
    assert len(small._keys) == 10


def test_unknown_users_cost_a_scrypt_check_too(app, monkeypatch):
    """Known user, wrong password, and unknown user: one scrypt check
    each, of the same cost (the same parameters), so the time of the
    answer does not tell which names exist."""
    calls = []
    real = hashlib.scrypt
    monkeypatch.setattr(auth.hashlib, 'scrypt', lambda *a, **kw: calls.append(
        (kw['n'], kw['r'], kw['p'])) or real(*a, **kw))
    app.get('/api/me', headers=basic('mia', 'wrong'), status=401)
    known = list(calls)
    del calls[:]
    app.get('/api/me', headers=basic('nobody', 'wrong'), status=401)
    assert calls == known == [(2 ** 14, 8, 1)]


def test_the_throttle_keeps_user_names_short(db, users):
    """A user name may be as long as a header: the throttle, which keeps
    up to 100,000 keys, keeps a 16-byte digest of it."""
    app = webApp(db, users=users[0])
    app.get('/api/me', headers=basic('x' * 100000, 'guess'), status=401)
    keys = list(registry(app).throttle._keys)
    assert len(keys) == 2 and all(len(repr(key)) < 120 for key in keys)

"""Helpers of the web tests: an in-memory database with the example tasks,
the app under webtest, users files and XML-RPC calls through webtest."""
import base64
import io
import os
import sys
import xmlrpc.client

import pytest
import webtest
import ZODB
from ZODB.MappingStorage import MappingStorage

from remotetask import cli, zcml
from remotetask.db import ServiceRunner
from remotetask.web import make_app
from remotetask.web.auth import addToken, addUser

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), 'examples.zcml')
LOOPBACK = {'REMOTE_ADDR': '127.0.0.1'}


def exampleDB():
    """A MappingStorage database; the example tasks registered."""
    zcml.loadFile(EXAMPLES)
    return ZODB.DB(MappingStorage())


def webApp(db, users=None, processor=None, remote='127.0.0.1', **kw):
    return webtest.TestApp(make_app(db, users=users, processor=processor,
                                    **kw),
                           extra_environ={'REMOTE_ADDR': remote})


def basic(name, password):
    token = base64.b64encode(('%s:%s' % (name, password)).encode()).decode()
    return {'Authorization': 'Basic ' + token}


def bearer(token):
    return {'Authorization': 'Bearer ' + token}


def usersFile(tmp_path):
    """A users file with manager "mia" (password "mia-pw", and a token) and
    viewer "vic" (password "vic-pw").  Returns (path, mia's token)."""
    path = str(tmp_path / 'users.json')
    addUser(path, 'mia', 'mia-pw', 'manager')
    addUser(path, 'vic', 'vic-pw', 'viewer')
    return path, addToken(path, 'mia')[1]


def call(app, method, *params, headers=None, status=200):
    """Call an XML-RPC method through webtest; return the result or raise
    the fault."""
    body = xmlrpc.client.dumps(params, method, allow_none=True)
    response = app.post('/RPC2', body, headers=headers or {},
                        content_type='text/xml', status=status)
    if status != 200:
        return response
    return xmlrpc.client.loads(response.body, use_builtin_types=True)[0][0]


def runAll(db):
    """Run every due job (in the eager mode of the service) and commit."""
    ServiceRunner(db)(lambda service: service.process())


def runCommand(argv, stdin='', stderr=False):
    """Run ``remotetask ARGV`` in this process with ``stdin``; return
    (exit code, output) (with what went to stderr too if ``stderr``)."""
    out = io.StringIO()
    old = sys.stdin, sys.stdout, sys.stderr
    sys.stdin, sys.stdout = io.StringIO(stdin), out
    if stderr:
        sys.stderr = out
    try:
        code = cli.run(argv)
    finally:
        sys.stdin, sys.stdout, sys.stderr = old
    return code, out.getvalue()


# Fixtures shared by the web test modules (imported by name there).

@pytest.fixture
def db():
    """A database with the example tasks' service."""
    database = exampleDB()
    yield database
    database.close()


@pytest.fixture
def app(db):
    """The web application on ``db`` (webtest, anonymous from loopback)."""
    return webApp(db)

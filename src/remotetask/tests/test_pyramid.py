"""remotetask in a Pyramid application:
``config.include('remotetask.pyramid')`` with the real pyramid_zodbconn and
pyramid_tm, driven through WebTest."""
import time

import pytest
import transaction
from pyramid.config import Configurator
from pyramid.exceptions import ConfigurationError

from remotetask import pyramid as rtpyramid
from remotetask import testing
from remotetask.tests import pyramidapp

pytest.importorskip('pyramid_zodbconn')
webtest = pytest.importorskip('webtest')


def makeApp(tmp_path, **settings):
    settings = dict({'zodbconn.uri': 'file://%s/Data.fs' % tmp_path,
                     'remotetask.stop_on_sigterm': 'false'}, **settings)
    config = pyramidapp.configure(settings)
    try:
        return config.make_wsgi_app()
    except BaseException:
        config.registry._zodb_databases[''].close()
        raise


@pytest.fixture
def apps():
    made = []
    yield made
    for app in made:
        rtpyramid.stopProcessing(app.registry, timeout=5)
        app.registry._zodb_databases[''].close()


def database(app):
    return app.registry._zodb_databases['']


def wait(app, jobid, statuses, path=('tasks',), timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        with database(app).transaction() as conn:
            service = rtpyramid.findService(conn.root(), path)
            job = service.jobs[jobid]
            if job.status in statuses:
                return job.status, job.output, dict(conn.root()['notes'])
        assert time.monotonic() < deadline, job.status
        time.sleep(0.05)


def test_a_job_added_by_a_view_commits_with_it_and_is_processed(
        tmp_path, apps):
    app = makeApp(tmp_path)
    apps.append(app)
    jobid = webtest.TestApp(app).get('/add/first').json['job']
    assert wait(app, jobid, {'completed', 'error'}) == (
        'completed', 'FIRST', {'first': 'written and processed'})
    assert app.registry['remotetask.processor'].running


def test_a_view_that_fails_leaves_no_job(tmp_path, apps):
    app = makeApp(tmp_path)
    apps.append(app)
    client = webtest.TestApp(app)
    with pytest.raises(pyramidapp.ViewFailed):
        client.get('/fail/lost')
    with database(app).transaction() as conn:
        service = conn.root()['tasks']
        assert (len(service.jobs), service.count()) == (0, 0)
        assert 'lost' not in conn.root()['notes']
    # The application goes on: the next view's job is processed.
    jobid = client.get('/add/next').json['job']
    assert wait(app, jobid, {'completed'})[0] == 'completed'


def test_processing_off_leaves_jobs_to_a_worker(tmp_path, apps):
    app = makeApp(tmp_path, **{'remotetask.processing': 'false',
                               'remotetask.service': 'jobs'})
    apps.append(app)
    jobid = webtest.TestApp(app).get('/add/later').json['job']
    assert app.registry.get('remotetask.processor') is None
    with database(app).transaction() as conn:
        service = conn.root()['jobs']
        assert service.getStatus(jobid) == 'queued'
        assert not service.isProcessing()
    # What ``remotetask worker --service jobs`` does, in this process.
    processor = rtpyramid.startProcessing(app.registry)
    assert processor.running
    assert wait(app, jobid, {'completed'}, path=('jobs',))[0] == 'completed'


def test_a_service_in_a_path(tmp_path, apps):
    from remotetask.service import TaskService
    path = {'remotetask.service': 'app/tasks', 'remotetask.concurrency': '2'}
    with pytest.raises(ConfigurationError, match=(
            r'remotetask.service = app/tasks: no task service there \(one is '
            r'created only at a root key\)')):
        makeApp(tmp_path, **path)
    db = ZODBdb(tmp_path)
    with db.transaction() as conn:
        conn.root()['app']['tasks'] = TaskService()
    db.close()
    app = makeApp(tmp_path, **path)
    apps.append(app)
    assert app.registry['remotetask.processor'].concurrency == 2
    jobid = webtest.TestApp(app).get('/add/deep').json['job']
    assert wait(app, jobid, {'completed'}, path=('app', 'tasks'))[0] == \
        'completed'


def ZODBdb(tmp_path):
    import ZODB
    from ZODB.FileStorage import FileStorage
    return ZODB.DB(FileStorage(str(tmp_path / 'Data.fs')))


@pytest.mark.parametrize('settings, message', [
    ({'remotetask.concurrency': 'many'},
     "remotetask.concurrency = 'many': expected an integer >= 1"),
    ({'remotetask.lease': '0'},
     "remotetask.lease = '0': expected a positive number of seconds"),
    ({'remotetask.batch': 'lots'},
     "remotetask.batch = 'lots': expected 'auto' or an integer >= 1"),
    ({'remotetask.processing': 'maybe'},
     "remotetask.processing = 'maybe': expected true or false"),
    ({'remotetask.service': 'a//b'},
     "remotetask.service = 'a//b': expected a root key or a path"),
    ({'remotetask.colour': 'blue'},
     'unknown setting remotetask.colour'),
])
def test_bad_settings_are_named(tmp_path, settings, message):
    with pytest.raises(ConfigurationError) as raised:
        makeApp(tmp_path, **settings)
    assert message in str(raised.value)


def test_no_database_configured():
    with pytest.raises(ConfigurationError, match='needs a database: set '
                       'zodbconn.uri'):
        with Configurator(settings={}) as config:
            config.include('remotetask.pyramid')


def test_missing_parent_of_the_service_path(tmp_path, apps):
    with pytest.raises(ConfigurationError, match=(
            "remotetask.service = site/tasks: no 'site' in the database "
            "root")):
        makeApp(tmp_path, **{'remotetask.service': 'site/tasks'})
    transaction.abort()


PASTE_INI = """\
[app:main]
use = call:remotetask.tests.pyramidapp:main
zodbconn.uri = zeo://127.0.0.1:{zeoport}
remotetask.concurrency = 2
remotetask.grace = 1

[server:main]
use = egg:waitress#main
host = 127.0.0.1
port = {port}

[loggers]
keys = root

[handlers]
keys = file

[formatters]
keys = generic

[logger_root]
level = INFO
handlers = file

[handler_file]
class = FileHandler
args = (r'{log}', 'a')
level = NOTSET
formatter = generic

[formatter_generic]
format = %(asctime)s %(levelname)s [%(name)s] %(message)s
"""


def fetch(port, path):
    """(status, JSON or text) of a GET."""
    import json
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen('http://127.0.0.1:%d%s' % (port, path),
                                    timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode('utf-8', 'replace')


def waitJob(db, jobid, statuses, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        with db.transaction() as conn:
            job = conn.root()['tasks'].jobs[jobid]
            if job.status in statuses:
                return job.status, dict(conn.root()['notes'])
        assert time.monotonic() < deadline, job.status
        time.sleep(0.05)


@pytest.mark.zeo
@pytest.mark.slow
def test_served_by_pserve_and_stopped_by_sigterm(tmp_path):
    """The application run by ``pserve`` (waitress) over ZEO: a view's job
    is run by the processor the include started; a failing view (HTTP 500)
    leaves no job; SIGTERM stops the processor, which hands its running
    job back."""
    import subprocess
    import sys
    import ZEO
    log = tmp_path / 'app.log'
    with testing.ZEOServer(str(tmp_path / 'Data.fs')) as zeo:
        port = testing.freePort()
        ini = tmp_path / 'app.ini'
        ini.write_text(PASTE_INI.format(zeoport=zeo.port, port=port,
                                        log=log))
        proc = subprocess.Popen(
            [sys.executable, '-m', 'pyramid.scripts.pserve', str(ini)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
            cwd=str(tmp_path), env=testing.subprocessEnv())
        db = None
        try:
            testing.waitForPort(port, 60, proc=proc)
            db = ZEO.DB(zeo.address)
            status, body = fetch(port, '/add/served')
            assert status == 200, body
            assert waitJob(db, body['job'], {'completed', 'error'}) == (
                'completed', {'served': 'written and processed'})

            status, body = fetch(port, '/fail/nope')
            assert status == 500
            with db.transaction() as conn:
                assert len(conn.root()['tasks'].jobs) == 1
                assert 'nope' not in conn.root()['notes']

            status, body = fetch(port, '/slow/x')
            slow = body['job']
            waitJob(db, slow, {'processing'})
            assert testing.stopProcess(proc, 60) == 0
            assert waitJob(db, slow, {'queued', 'processing'}, 5)[0] == \
                'queued'
            text = log.read_text()
            assert 'SIGTERM: shutting down' in text
            assert 'handed back' in text
        finally:
            testing.stopProcess(proc)
            if db is not None:
                db.close()

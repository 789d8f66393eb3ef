"""remotetask in a Pyramid application: ``config.include('remotetask.pyramid')``
with the real pyramid_zodbconn and pyramid_tm, driven through WebTest."""
import time

import pytest
import transaction
from persistent.mapping import PersistentMapping
from pyramid.config import Configurator
from pyramid.exceptions import ConfigurationError

from remotetask import pyramid as rtpyramid
from remotetask.job import currentJob

pytest.importorskip('pyramid_zodbconn')
webtest = pytest.importorskip('webtest')


class ViewFailed(Exception):
    pass


def processNote(input):
    """A task that edits the application's data."""
    root = currentJob().service._p_jar.root()
    root['notes'][input] += ' and processed'
    return input.upper()


def _write(request):
    from pyramid_zodbconn import get_connection
    conn = get_connection(request)
    assert request.tasks._p_jar is conn     # the request's own connection
    name = request.matchdict['name']
    conn.root()['notes'][name] = 'written'
    return name, request.tasks.add('note', name)


def addView(request):
    name, jobid = _write(request)
    return {'job': jobid}


def failView(request):
    _write(request)
    raise ViewFailed('the view failed after adding its job')


def makeApp(tmp_path, **settings):
    settings = dict({'zodbconn.uri': 'file://%s/Data.fs' % tmp_path,
                     'remotetask.stop_on_sigterm': 'false'}, **settings)
    with Configurator(settings=settings) as config:
        config.include('remotetask.pyramid')
        config.add_task('note', 'remotetask.tests.test_pyramid.processNote',
                        max_retries=0)
        config.add_route('add', '/add/{name}')
        config.add_view(addView, route_name='add', renderer='json')
        config.add_route('fail', '/fail/{name}')
        config.add_view(failView, route_name='fail', renderer='json')
        db = config.registry._zodb_databases['']
        with db.transaction() as conn:
            conn.root().setdefault('notes', PersistentMapping())
            conn.root().setdefault('app', PersistentMapping())
    try:
        return config.make_wsgi_app()
    except BaseException:
        db.close()
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
    with pytest.raises(ViewFailed):
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

"""remotetask in a real Zope application (``remotetask.zope``).

Each test sets up a Zope instance (``zopeapp``) whose database is on a ZEO
server, creates sites with task services and local utilities in it with
``zconsole run``, starts it with ``runwsgi`` and watches the jobs from this
process over ZEO; it stops Zope with SIGTERM as a process manager does.
"""
import time

import pytest
import transaction
import ZEO
import zope.component

from remotetask import testing
from remotetask.interfaces import ITask, ITaskService
from remotetask.task import SimpleTask
from remotetask.tests import zopetasks
from remotetask.tests.zopeapp import SETUP, ZopeInstance, productConfig

pytest.importorskip('Zope2')

pytestmark = [pytest.mark.zeo, pytest.mark.slow]

#: Adds jobs before Zope starts (printed: "site name id").
ADD_JOBS = """\
from remotetask.interfaces import ITaskService
import transaction
for site, task, input in %r:
    service = getattr(app, site).getSiteManager().getUtility(
        ITaskService, 'tasks')
    print(site, task, service.add(task, input))
transaction.commit()
"""


@pytest.fixture
def zeo(tmp_path):
    with testing.ZEOServer(str(tmp_path / 'Data.fs')) as server:
        yield server


@pytest.fixture
def app(tmp_path, zeo):
    instance = ZopeInstance(tmp_path / 'instance', zeo)
    instance.run(SETUP)
    yield instance
    if instance.proc is not None:
        instance.stop()


@pytest.fixture
def db(zeo):
    database = ZEO.DB(zeo.address)
    yield database
    database.close()


def addJobs(app, *jobs):
    """Add jobs with zconsole (in Zope, where the tasks are registered);
    {(site, task): job id}."""
    ids = {}
    for line in app.run(ADD_JOBS % (list(jobs),)).splitlines():
        site, task, jobid = line.split()
        ids[site, task] = int(jobid)
    return ids


def service(conn, site):
    app = conn.root()['Application']
    return app[site].getSiteManager().getUtility(ITaskService, 'tasks')


def waitFor(db, site, jobid, statuses, timeout=60):
    """Poll until the job's status is one of ``statuses``; the job."""
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    try:
        deadline = time.monotonic() + timeout
        while True:
            tm.begin()
            job = service(conn, site).jobs[jobid]
            if job.status in statuses:
                return _snapshot(job)
            if time.monotonic() > deadline:
                raise AssertionError('job %s of %s is %r after %ss, not %s'
                                     % (jobid, site, job.status, timeout,
                                        statuses))
            time.sleep(0.1)
    finally:
        tm.abort()
        conn.close()


class _snapshot:
    def __init__(self, job):
        self.status = job.status
        self.output = job.output
        self.error = job.error
        self.worker = job.worker


def folderIds(db, site):
    conn = db.open()
    try:
        return set(conn.root()['Application'][site].objectIds())
    finally:
        conn.close()


def title(db, site, name):
    conn = db.open()
    try:
        return conn.root()['Application'][site][name].title
    finally:
        conn.close()


def test_autostarted_jobs_run_in_their_site_as_the_configured_user(app, db):
    """site1@tasks and site2@* start; each job sees its own site's local
    utility; a job that needs a permission runs as the configured user;
    a job added while Zope runs is picked up; SIGTERM stops the processors
    and hands the running job back."""
    app.configure(productConfig(autostart='site1@tasks, site2@*',
                                 user='worker', concurrency=2, grace=1))
    ids = addJobs(app, ('site1', 'greet', 'one'), ('site2', 'greet', 'two'),
                  ('site1', 'addFolder', 'made'),
                  ('site1', 'retitle', {'path': 'doc', 'title': 'Final'}))
    app.start()
    app.waitForLog('autostart site2@tasks: processing')

    one = waitFor(db, 'site1', ids['site1', 'greet'], {'completed', 'error'})
    assert (one.status, one.output) == ('completed', {
        'site': 'site1', 'text': 'Hello from site1, one'}), one.error
    two = waitFor(db, 'site2', ids['site2', 'greet'], {'completed', 'error'})
    assert two.output == {'site': 'site2', 'text': 'Hello from site2, two'}
    made = waitFor(db, 'site1', ids['site1', 'addFolder'],
                   {'completed', 'error'})
    assert made.status == 'completed', made.error
    assert made.output == {'user': 'worker',
                           'url': 'http://localhost:8080/site1/made'}
    assert 'made' in folderIds(db, 'site1')
    edited = waitFor(db, 'site1', ids['site1', 'retitle'],
                     {'completed', 'error'})
    assert (edited.status, edited.output) == (
        'completed', 'http://localhost:8080/site1/doc'), edited.error
    assert title(db, 'site1', 'doc') == 'Final'

    # Added from another process while Zope runs: picked up.
    zope.component.provideUtility(SimpleTask(zopetasks.greet), ITask,
                                  name='greet')
    zope.component.provideUtility(SimpleTask(zopetasks.slow), ITask,
                                  name='slow')
    with db.transaction() as conn:
        later = service(conn, 'site2').add('greet', 'later')
        slow = service(conn, 'site1').add('slow', 120)
    assert waitFor(db, 'site2', later, {'completed'}).output['text'] == \
        'Hello from site2, later'
    waitFor(db, 'site1', slow, {'processing'})

    # Stopping Zope stops the processors: the running job goes back to
    # the queue after the grace period rather than waiting for its lease.
    assert app.stop() == 0      # not -SIGTERM: it shut down cleanly
    log = app.log()
    assert 'SIGTERM: shutting down' in log
    assert 'site1@tasks: processing stopped' in log
    assert 'site2@tasks: processing stopped' in log
    back = waitFor(db, 'site1', slow, {'queued', 'processing'}, timeout=5)
    assert back.status == 'queued'


def test_without_a_user_a_job_needing_a_permission_fails(app, db):
    app.configure(productConfig(autostart='site1@tasks'))
    ids = addJobs(app, ('site1', 'addFolder', 'denied'),
                  ('site1', 'retitle', {'path': 'doc', 'title': 'Final'}))
    app.start()
    job = waitFor(db, 'site1', ids['site1', 'addFolder'],
                  {'completed', 'error'})
    assert job.status == 'error'
    assert 'Unauthorized' in job.error
    assert 'denied' not in folderIds(db, 'site1')
    job = waitFor(db, 'site1', ids['site1', 'retitle'],
                  {'completed', 'error'})
    assert (job.status, job.error) == (
        'error', 'AccessControl.unauthorized.Unauthorized: may not edit doc')
    assert title(db, 'site1', 'doc') == 'Draft'



def test_bad_configuration_one_line_each_and_the_rest_starts(app, db):
    """A malformed entry, a missing site, a folder that is not a site, a
    missing service, a root folder that is not a site, a bad option value,
    an unknown option: one error line each.  The user 'editor' exists in
    site2's own user folder only: site1's service is not started (one line),
    site2's runs its jobs as editor."""
    app.configure(productConfig(
        autostart='bad, nosuch@tasks plain@tasks site1@missing @tasks '
                  'x@y@z *@*',
        user='editor', concurrency='many', colour='blue'))
    ids = addJobs(app, ('site1', 'greet', 'never'),
                  ('site2', 'addFolder', 'edited'))
    app.start()
    edited = waitFor(db, 'site2', ids['site2', 'addFolder'],
                     {'completed', 'error'})
    assert edited.status == 'completed', edited.error
    assert edited.output['user'] == 'editor'
    errors = [line.split('[remotetask.zope] ', 1)[1]
              for line in app.log().splitlines()
              if ' ERROR [remotetask.zope] ' in line]
    assert errors == [
        "<product-config remotetask> autostart: 'bad' is not site@service "
        "(use @service for the root folder)",
        "<product-config remotetask> autostart: 'x@y@z' is not site@service "
        "(use @service for the root folder)",
        "<product-config remotetask> unknown option 'colour' (known: "
        "autostart, batch, concurrency, grace, lease, server-url, "
        "stop-on-sigterm, user)",
        "<product-config remotetask> concurrency: 'many' is not an integer "
        ">= 1; using 1",
        "autostart nosuch@tasks: site 'nosuch' not found: the root folder "
        "has no 'nosuch'",
        "autostart plain@tasks: 'plain' is not a site, so it has no local "
        "task services",
        "autostart site1@missing: site 'site1' has no task service named "
        "'missing' (its task services: tasks)",
        "autostart @tasks: the root folder is not a site, so it has no "
        "local task services",
        "autostart site1@tasks: user 'editor' not found in the acl_users of "
        "site 'site1' or above; not started",
    ]
    assert "autostart site2@tasks: processing with 1 thread(s) as user " \
        "'editor'" in app.log()
    # site1's job stays queued: no processor runs it.
    assert waitFor(db, 'site1', ids['site1', 'greet'], {'queued'}).status \
        == 'queued'

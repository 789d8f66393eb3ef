"""``remotetask.zope`` with Zope 3-style sites (zope.site folders, no
Acquisition), in this process; the processor's ``around`` hook."""
import doctest
import logging
import time

import pytest
import transaction
import ZODB
import zope.component
import zope.interface
from zope.component.hooks import getSite
from ZODB.FileStorage import FileStorage

from remotetask.interfaces import ITask, ITaskService
from remotetask.processor import Processor
from remotetask.service import TaskService
from remotetask.task import SimpleTask
from remotetask.tests.zopetasks import Greeter, IGreeter
from remotetask.zope import autostart
from remotetask.zope.config import AutostartConfig, Spec, readConfig

pytest.importorskip('zope.site')


def siteGreeting(input):
    return '%s: %s' % (getSite().__name__, zope.component.getUtility(
        IGreeter).greeting)


@pytest.fixture
def db(tmp_path):
    database = ZODB.DB(FileStorage(str(tmp_path / 'Data.fs')))
    yield database
    database.close()


@pytest.fixture
def tasks():
    zope.component.provideUtility(SimpleTask(siteGreeting), ITask,
                                  name='greet')


def makeSites(db, *names):
    from zope.site.folder import Folder, rootFolder
    from zope.site.site import LocalSiteManager
    with db.transaction() as conn:
        root = conn.root()['Application'] = rootFolder()
        for name in names:
            site = root[name] = Folder()
            sm = LocalSiteManager(site)
            site.setSiteManager(sm)
            sm['default']['tasks'] = service = TaskService()
            sm.registerUtility(service, ITaskService, name='tasks')
            sm.registerUtility(Greeter('hello from ' + name), IGreeter)
        root['plain'] = Folder()


def siteService(conn, name):
    return conn.root()['Application'][name].getSiteManager().getUtility(
        ITaskService, 'tasks')


def waitFor(db, site, jobid, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        with db.transaction() as conn:
            job = siteService(conn, site).jobs[jobid]
            if job.status in ('completed', 'error'):
                return job.status, job.output, job.error
        assert time.monotonic() < deadline, 'job %s still %s' % (jobid,
                                                                  job.status)
        time.sleep(0.05)


def test_zope3_sites_autostart_and_stop_when_the_database_closes(
        db, tasks, caplog):
    makeSites(db, 'a', 'b')
    config, problems = readConfig({'autostart': '*@*', 'user': 'admin',
                                   'stop-on-sigterm': 'off'})
    assert problems == []
    caplog.set_level(logging.INFO, 'remotetask.zope')
    started = autostart.startConfigured(db, config)
    assert sorted(started) == ['a@tasks', 'b@tasks']
    assert "user 'admin' ignored: users are supported in Zope 2-style " \
        "(AccessControl) applications only" in caplog.text
    with db.transaction() as conn:
        ids = {name: siteService(conn, name).add('greet') for name in 'ab'}
    assert waitFor(db, 'a', ids['a']) == ('completed', 'a: hello from a',
                                          None)
    assert waitFor(db, 'b', ids['b']) == ('completed', 'b: hello from b',
                                          None)
    processors = list(started.values())
    assert all(p.running for p in processors)
    db.close()
    assert not any(p.running for p in processors)
    assert 'a@tasks: processing stopped' in caplog.text


def test_nothing_to_start_is_said(db, caplog):
    makeSites(db, 'a')
    with caplog.at_level(logging.INFO, 'remotetask.zope'):
        assert autostart.startConfigured(db, AutostartConfig()) == {}
        assert autostart.startConfigured(
            db, AutostartConfig([Spec('*', 'other')])) == {}
    assert 'names no services to autostart' in caplog.text
    assert "autostart *@other: no site has a task service named 'other'" \
        in caplog.text


def test_not_a_zope_database(db, caplog):
    with caplog.at_level(logging.INFO, 'remotetask.zope'):
        assert autostart.startConfigured(
            db, AutostartConfig([Spec('a', 'tasks')])) == {}
    assert "the database has no 'Application' at its root: it is not the " \
        "database of a Zope application; nothing started" in caplog.text


def test_disabled_by_the_environment(db, monkeypatch, caplog):
    monkeypatch.setattr(autostart, 'productConfig',
                        lambda: {'autostart': 'a@tasks'})
    monkeypatch.setenv('REMOTETASK_AUTOSTART', 'off')
    makeSites(db, 'a')
    with caplog.at_level(logging.INFO, 'remotetask.zope'):
        autostart.databaseOpened(type('Event', (), {'database': db})())
    assert 'REMOTETASK_AUTOSTART=off: no processors started' in caplog.text
    with db.transaction() as conn:
        assert not siteService(conn, 'a').isProcessing()


class _Around:
    def __init__(self, fail=False):
        self.fail = fail
        self.entered = []
        self.exited = 0

    def __call__(self, service, job):
        return self._context(service, job)

    def _context(self, service, job):
        import contextlib

        @contextlib.contextmanager
        def context():
            if self.fail:
                raise LookupError('no such site')
            self.entered.append((service._p_jar is not None, job.id))
            try:
                yield
            finally:
                self.exited += 1
        return context()


def test_processor_runs_each_job_inside_around(db):
    zope.component.provideUtility(SimpleTask(lambda input: input), ITask,
                                  name='echo')
    with db.transaction() as conn:
        service = conn.root()['tasks'] = TaskService()
        ids = [service.add('echo', i) for i in range(3)]
    around = _Around()
    processor = Processor(db, 'tasks', around=around, batch=1)
    processor.start()
    try:
        deadline = time.monotonic() + 60
        while processor.stats['completed'] < 3:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        processor.stop()
    assert sorted(around.entered) == [(True, i) for i in ids]
    assert around.exited == 3


def test_a_failing_around_fails_the_job_with_its_error(db):
    zope.component.provideUtility(SimpleTask(lambda input: input), ITask,
                                  name='echo')
    with db.transaction() as conn:
        jobid = conn.root()['tasks'] = TaskService()
        jobid = conn.root()['tasks'].add('echo', 1)
    processor = Processor(db, 'tasks', around=_Around(fail=True))
    processor.start()
    try:
        deadline = time.monotonic() + 60
        while True:
            with db.transaction() as conn:
                job = conn.root()['tasks'].jobs[jobid]
                if job.status == 'error':
                    assert 'LookupError: no such site' in job.error
                    break
            assert time.monotonic() < deadline, job.status
            time.sleep(0.05)
    finally:
        processor.stop()
    with pytest.raises(ValueError, match='around must be callable'):
        Processor(db, 'tasks', around=42)
    transaction.abort()


def test_config_doctests():
    from remotetask.zope import config
    failures, tests = doctest.testmod(
        config, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert tests and not failures


def test_a_zope_app_appsetup_application(tmp_path, tasks, caplog):
    """The bootstrap of a zope.app.appsetup (zope.app.wsgi) application:
    its root folder is a site; the configuration comes from its product
    configuration; the subscriber is the one of remotetask.zope's ZCML."""
    appsetup = pytest.importorskip('zope.app.appsetup.appsetup')
    from zope.app.appsetup.bootstrap import bootStrapSubscriber
    from zope.app.appsetup.product import setProductConfiguration
    from zope.configuration import xmlconfig
    from zope.processlifetime import IDatabaseOpened

    import remotetask.zope
    caplog.set_level(logging.INFO, 'remotetask.zope')
    xmlconfig.file('configure.zcml', remotetask.zope)
    zope.component.provideHandler(bootStrapSubscriber, (IDatabaseOpened,))
    setProductConfiguration('remotetask', {'autostart': '@tasks',
                                           'stop-on-sigterm': 'off'})
    path = str(tmp_path / 'Data.fs')

    # First start: the bootstrap creates the root folder; no service yet.
    appsetup.database(path).close()
    assert "autostart @tasks: the root folder has no task service named " \
        "'tasks' (its task services: none)" in caplog.text

    db = ZODB.DB(FileStorage(path))
    with db.transaction() as conn:
        sm = conn.root()['Application'].getSiteManager()
        sm['default']['tasks'] = service = TaskService()
        sm.registerUtility(service, ITaskService, name='tasks')
        sm.registerUtility(Greeter('hello from the root'), IGreeter)
        jobid = service.add('greet')
    db.close()

    # Next start: its processor runs the job in the root folder's site.
    db = appsetup.database(path)
    try:
        deadline = time.monotonic() + 60
        while True:
            with db.transaction() as conn:
                root = conn.root()['Application']
                job = root.getSiteManager().getUtility(
                    ITaskService, 'tasks').jobs[jobid]
                if job.status in ('completed', 'error'):
                    break
            assert time.monotonic() < deadline, job.status
            time.sleep(0.05)
        assert (job.status, job.output) == (
            'completed', 'None: hello from the root')
    finally:
        db.close()
    assert '@tasks: processing stopped' in caplog.text

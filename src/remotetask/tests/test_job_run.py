"""A job's start keeps its lease and its progress in ONE persistent object
(``job._Run``): a claim stores one new object per job instead of two, and
concurrent renewals, progress reports and cancel requests, each from a
connection of its own, merge (``_Run._p_resolveConflict``)."""
import pytest
import transaction
import zope.component
import ZODB
from ZODB.FileStorage import FileStorage
from ZODB.POSException import ConflictError

from remotetask import limits
from remotetask.interfaces import COMPLETED
from remotetask.job import _Lease, _Progress, _Run
from remotetask.service import TaskService
from remotetask.task import SimpleTask


@pytest.fixture
def service():
    zope.component.provideUtility(SimpleTask(lambda input: input),
                                  name='echo')
    return TaskService()


def test_a_claim_makes_one_object_for_lease_and_progress(service):
    service.add('echo', 1, now=100)
    job = service.claim(now=100, worker='w', lease=30)[0]
    assert job._lease is job._progress and type(job._lease) is _Run
    assert job.lease_expires == 130 and job._lease.worker == 'w'
    assert job.progress == (None, '')
    job.setProgress(0.5, 'half', now=101)
    assert job.progress == (0.5, 'half')
    assert not limits.cancelRequested(job)
    # The run ends: the lease goes, the last progress stays readable.
    assert service.run(job, now=103) == COMPLETED
    assert job.lease_expires is None and job.progress == (0.5, 'half')
    # A cancel request of a running job lands on its start's object.
    jobid = service.add('echo', 2, now=104)
    job = service.claim(now=104)[0]
    service.cancel(jobid, now=105)
    assert limits.cancelRequested(job) and job._progress is job._lease


def test_a_job_claimed_before_keeps_its_two_objects(service):
    jobid = service.add('echo', 1, now=100)
    job = service.jobs[jobid]
    job._lease = _Lease('old', 150)
    job._progress = _Progress()
    job.setProgress(0.25, 'a quarter')
    assert job.lease_expires == 150 and job.progress == (0.25, 'a quarter')
    limits.requestCancel(job, 120)
    assert limits.cancelRequested(job)


@pytest.fixture
def two(tmp_path):
    """Two connections to one FileStorage holding a job's _Run."""
    db = ZODB.DB(FileStorage(str(tmp_path / 'run.fs')))
    tms = [transaction.TransactionManager() for _ in range(2)]
    conns = [db.open(tm) for tm in tms]
    with tms[0]:
        conns[0].root()['run'] = _Run('w', 130.0)
    for tm in tms:
        tm.begin()
    yield [(tm, conn.root()['run']) for tm, conn in zip(tms, conns)]
    for tm, conn in zip(tms, conns):
        tm.abort()
        conn.close()
    db.close()


def _reread(tm, run):
    tm.abort()
    tm.begin()
    run._p_activate()
    return run


def test_a_renewal_and_a_progress_report_merge(two):
    (tm1, clock), (tm2, reporter) = two
    clock.expires = 160.0
    reporter.fraction, reporter.message, reporter.updated = 0.5, 'half', 1.0
    tm1.commit()
    tm2.commit()
    run = _reread(tm1, clock)
    assert (run.expires, run.fraction, run.message, run.updated) == (
        160.0, 0.5, 'half', 1.0)


def test_a_renewal_and_a_cancel_request_merge(two):
    (tm1, clock), (tm2, user) = two
    user.cancel_requested = 140.0
    clock.expires = 160.0
    tm2.commit()
    tm1.commit()
    run = _reread(tm2, user)
    assert (run.expires, run.cancel_requested) == (160.0, 140.0)


def test_two_renewals_keep_the_later_expiry(two):
    (tm1, a), (tm2, b) = two
    a.expires = 170.0
    b.expires = 160.0
    tm1.commit()
    tm2.commit()
    assert _reread(tm1, a).expires == 170.0


def test_two_different_reports_conflict(two):
    (tm1, a), (tm2, b) = two
    a.message = 'one'
    b.message = 'two'
    tm1.commit()
    with pytest.raises(ConflictError):
        tm2.commit()

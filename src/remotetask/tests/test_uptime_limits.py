"""Runaway protection (remotetask.limits): times past the horizon, cron
jobs faster than once a second, bounded attempt history, cancel of a
processing job.  In-process; the real-process tests are in
test_uptime_processes.py."""
import math
import pickle

import pytest
import zope.component

from remotetask import limits
from remotetask.interfaces import (
    CANCELLED, COMPLETED, CRONJOB, PROCESSING, InvalidInputError,
    InvalidScheduleError, InvalidStatusError)
from remotetask.job import CronJob
from remotetask.service import TaskService
from remotetask.task import SimpleTask
from remotetask.testing import checkConsistency


@pytest.fixture
def service():
    zope.component.provideUtility(SimpleTask(lambda input: input),
                                  name='echo')
    return TaskService()


# -- times --------------------------------------------------------------------

@pytest.mark.parametrize('eta', [1e18, 1e30, 2 ** 63, 1e308, math.inf,
                                 -math.inf, math.nan, 10 ** 400])
def test_eta_past_the_horizon_or_not_finite_is_refused(service, eta):
    with pytest.raises(InvalidInputError, match='eta'):
        service.add('echo', eta=eta)
    assert service.count() == 0 and not checkConsistency(service)


@pytest.mark.parametrize('delay', [1e308, 3e11, math.nan, math.inf])
def test_delay_past_the_horizon_or_not_finite_is_refused(service, delay):
    with pytest.raises(InvalidInputError, match='delay'):
        service.add('echo', delay=delay, now=1e9)
    assert service.count() == 0


def test_times_up_to_the_horizon_are_accepted(service):
    jobid = service.add('echo', eta=limits.HORIZON, now=0)
    assert service.jobs[jobid].eta == limits.HORIZON
    with pytest.raises(InvalidInputError, match='year 10000'):
        service.add('echo', eta=limits.HORIZON + 1)


def test_time_limit_must_be_a_number(service):
    with pytest.raises(InvalidInputError, match='time_limit'):
        service.add('echo', time_limit=math.nan)
    service.add('echo', time_limit=math.inf)       # no limit, in effect


# -- cron jobs faster than once a second --------------------------------------

@pytest.mark.parametrize('delay', [1e-9, 0.01, 0.999])
def test_cron_delay_under_a_second_is_refused(service, delay):
    with pytest.raises(InvalidScheduleError, match='once a second'):
        service.addCronJob('echo', interval=delay)
    assert service.count() == 0


def test_cron_once_a_second_is_allowed_also_as_an_expression(service):
    a = service.addCronJob('echo', interval=1, now=100)
    assert service.jobs[a].eta == 101
    # croniter's six-field expressions have seconds: every second is the
    # fastest they can go, and allowed.
    b = service.addCronJob('echo', expression='* * * * * *', now=100)
    assert service.jobs[b].eta == 101


def test_editing_a_cron_job_into_a_runaway_keeps_its_schedule(service):
    jobid = service.addCronJob('echo', interval=60)
    job = service.jobs[jobid]
    with pytest.raises(InvalidScheduleError, match='once a second'):
        job.update(interval=0.001)
    assert job.interval == 60


# -- bounded attempt history --------------------------------------------------

def _runCron(service, jobid, times, now):
    for _ in range(times):
        now = service.jobs[jobid].eta
        assert service.processNext(now=now, jobid=jobid)
    return now


def test_attempt_history_keeps_first_and_last_and_a_count(service):
    jobid = service.addCronJob('echo', 'x', interval=10, now=0)
    small = None
    for runs in (10, 1000):
        _runCron(service, jobid, runs - (small is not None and 10 or 0), 0)
        job = service.jobs[jobid]
        size = len(pickle.dumps(job.__getstate__()))
        if small is None:
            small = size
    assert job.attempt_count == 1000
    kept = limits.FIRST_ATTEMPTS + limits.LAST_ATTEMPTS
    assert len(job.attempts) == kept
    starts = [a['start'] for a in job.attempts]
    assert starts[:2] == [10, 20]                   # the first two
    assert starts[-1] == 10000                      # and the last ones
    assert all(a['outcome'] == COMPLETED for a in job.attempts)
    # A job run 1000 times takes the space of one run 10 times (the
    # numbers in it have more digits).
    assert size <= small + 64, (small, size)
    assert job.info()['attempt_count'] == 1000


def test_claim_token_stays_unique_once_history_is_bounded(service):
    jobid = service.addCronJob('echo', interval=10, now=0)
    _runCron(service, jobid, 20, 0)
    job = service.jobs[jobid]
    claimed = service.claim(now=job.eta + 1)[0]
    token = service.claimToken(claimed)
    assert token == 21 and service.owns(claimed, token)
    assert not service.owns(claimed, token - 1)


# -- cancel of a processing job -----------------------------------------------

class _Asked:
    """Like the processor's cancel event."""

    def __init__(self):
        self.requested = False

    def is_set(self):
        return self.requested


def test_cancel_of_a_processing_job_ends_it_cancelled_when_it_returns(
        service):
    seen = []

    def watch(input):
        from remotetask.job import currentJob
        seen.append(currentJob().cancelled)
        return 'done anyway'
    zope.component.provideUtility(SimpleTask(watch), name='watch')
    jobid = service.add('watch', now=0)
    job = service.claim(now=1)[0]
    assert service.cancel(jobid, now=2) is None
    assert job.status == PROCESSING      # asked, not done
    asked = _Asked()
    asked.requested = True              # what the clock does on seeing it
    assert service.run(job, now=3, cancelled=asked) == CANCELLED
    assert seen == [True]
    assert job.status == CANCELLED and job.completed == 3
    assert job.attempts[-1]['outcome'] == CANCELLED
    assert not checkConsistency(service)


def test_a_cancelled_cron_job_is_not_scheduled_again(service):
    jobid = service.addCronJob('echo', interval=10, now=0)
    job = service.claim(now=10)[0]
    service.cancel(jobid, now=11)
    # The request is in this snapshot: the run's end sees it even when
    # no processor told the task.
    assert service.run(job, now=12) == CANCELLED
    assert job.status == CANCELLED and job.eta is None
    assert not list(service.queue())


def test_a_cancel_that_missed_the_run_stops_the_next_claim(service):
    """The race: the cancel commits after the run's transaction read the
    job.  The run ends normally (the cron job is queued again); its next
    claim finds the request and cancels the job instead of running it."""
    jobid = service.addCronJob('echo', interval=10, now=0)
    job = service.claim(now=10)[0]
    progress = job._progress
    assert service.run(job, now=11) == CRONJOB
    progress.cancel_requested = 11.5     # what the late commit wrote
    assert service.claim(now=30) == []
    assert job.status == CANCELLED
    assert not checkConsistency(service)


def test_a_running_job_can_be_cancelled_but_not_deleted(service):
    jobid = service.add('echo')
    service.claim()
    with pytest.raises(InvalidStatusError, match='processing'):
        service.delete(jobid)
    service.cancel(jobid)
    assert limits.cancelRequested(service.jobs[jobid])
    done = service.add('echo')
    service.processNext(jobid=done)
    with pytest.raises(InvalidStatusError, match="it is 'completed'"):
        service.cancel(done)


def test_cron_job_class_default_for_old_pickles():
    job = CronJob.__new__(CronJob)
    assert job.attempt_count == 0

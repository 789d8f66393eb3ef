"""lovely.remotetask's clock rules (``remotetask.scheduling``): provisional
cron schedules, queued jobs due at any ``now``, one-off delayed cron jobs,
startJob's answers; and that without a fake ``now`` nothing moves."""
import pickle
import time

import pytest
import transaction
import ZODB
import ZODB.MappingStorage
import zope.component
from zope.interface.verify import verifyClass

from remotetask import interfaces
from remotetask.interfaces import (
    CANCELLED, COMPLETED, CRONJOB, DELAYED, ERROR, QUEUED, STARTLATER,
    InvalidScheduleError, InvalidStatusError)
from remotetask.job import CronJob, Job
from remotetask.service import TaskService
from remotetask.task import SimpleTask
from remotetask.testing import checkConsistency


def register(name, func):
    zope.component.provideUtility(SimpleTask(func), name=name)


@pytest.fixture
def service():
    register('echo', lambda input: input)
    return TaskService()


def test_verify_class():
    assert verifyClass(interfaces.ITaskService, TaskService)
    assert verifyClass(interfaces.IJob, Job)
    assert verifyClass(interfaces.ICronJob, CronJob)


def test_cron_job_without_now_is_scheduled_by_the_first_fake_now(service):
    jobid = service.addCronJob('echo', 'tick', minute=(10, 13))
    job = service.jobs[jobid]
    clockEta = job.eta
    assert clockEta > time.time() - 5       # the real next call, at once
    assert service.processNext(0) is False  # lovely: first sight, at 0
    assert job.eta == 600
    assert service.processNext(600) is True
    assert (job.status, job.output, job.eta) == (CRONJOB, 'tick', 780)
    assert service.processNext(660) is False
    assert service.processNext(780) is True
    assert not service._provisional
    assert not checkConsistency(service)


def test_without_a_fake_now_nothing_moves(service):
    cron = service.addCronJob('echo', expression='0 9 * * *',
                              timezone='Europe/Vienna')
    once = service.addCronJob('echo', delay=3600)
    etas = {jobid: service.jobs[jobid].eta for jobid in (cron, once)}
    assert service.hasJobsWaiting() is False
    service.process()
    assert service.claimNextJob() is None
    assert service.processNext() is False
    assert {jobid: service.jobs[jobid].eta for jobid in (cron, once)} == etas
    assert service.jobs[once].status == DELAYED
    # claim(now) (processors) never moves them either, whatever its now.
    assert service.claim(now=0) == []
    assert {jobid: service.jobs[jobid].eta for jobid in (cron, once)} == etas


def test_explicit_now_at_add_is_not_moved(service):
    jobid = service.addCronJob('echo', minute=(10,), now=0)
    service.process(now=5000)       # 00:10 and 01:10 have passed by then
    job = service.jobs[jobid]
    assert (job.output, job.eta) == (None, 7800)    # ran once, at 5000
    assert len(job.attempts) == 1


def test_a_job_that_ran_keeps_its_time(service):
    jobid = service.addCronJob('echo', interval=60)
    job = service.jobs[jobid]
    due = job.eta
    claimed = service.claim(now=due)            # a processor, on time
    service.run(claimed[0], now=due + 1)
    assert job.eta == due + 61
    eta = job.eta
    assert service.hasJobsWaiting(now=0) is False
    assert job.eta == eta
    assert not service._provisional


def test_queued_jobs_are_due_at_any_now(service):
    first = service.add('echo', 1)
    second = service.add('echo', 2)
    assert service.claim(now=0) == []           # claim: by the queue time
    assert service.hasJobsWaiting(now=0) is True
    assert service.jobs[first].eta == 0         # moved to the given now
    job = service.claimNextJob(now=0)
    assert job.id == first and job.started == 0
    service.run(job, now=0)
    service.process(now=0)
    assert service.getStatus(second) == COMPLETED
    assert service.hasJobsWaiting(now=0) is False
    # A delayed job waits for its time, fake or not.
    later = service.add('echo', 3, delay=60, now=100)
    service.process(now=159)
    assert service.getStatus(later) == DELAYED
    service.process(now=160)
    assert service.getStatus(later) == COMPLETED
    assert not checkConsistency(service)


def test_delay_is_a_one_off_delayed_job(service):
    jobid = service.addCronJob('echo', 'once', delay=10)
    job = service.jobs[jobid]
    assert job.status == DELAYED and not job.repeats()
    service.process(0)
    assert (job.status, job.eta) == (DELAYED, 10)
    service.process(9)
    assert job.status == DELAYED
    service.process(10)
    assert (job.status, job.output, job.eta) == (COMPLETED, 'once', None)
    # reschedule arms it again (from a given now, or provisionally).
    service.reschedule(jobid, now=100)
    assert (job.status, job.eta) == (DELAYED, 110)
    service.cancel(jobid)
    service.reschedule(jobid)
    service.process(now=200)
    assert (job.status, job.eta) == (DELAYED, 210)
    service.process(now=210)
    assert job.status == COMPLETED
    assert not checkConsistency(service)


def test_a_failing_delayed_cron_job_ends_error(service):
    register('boom', lambda input: 1 / 0)
    import logging
    logging.getLogger('remotetask').disabled = True
    try:
        jobid = service.addCronJob('boom', delay=5, now=0)
        service.process(now=5)
    finally:
        logging.getLogger('remotetask').disabled = False
    assert service.getStatus(jobid) == ERROR
    service.retry(jobid, now=6)                 # queued, like a plain job
    assert service.getStatus(jobid) == QUEUED


def test_update_switches_between_once_and_again(service):
    jobid = service.addCronJob('echo', delay=10, now=0)
    job = service.jobs[jobid]
    job.update(interval=30)
    service.reschedule(jobid, now=0)
    assert (job.status, job.eta) == (CRONJOB, 30)
    job.update(delay=5)
    service.reschedule(jobid, now=0)
    assert (job.status, job.eta) == (DELAYED, 5)
    job.update(delay=0)                     # lovely: 0 is no delay
    assert job.delay is None and job.repeats()
    with pytest.raises(InvalidScheduleError, match='not both'):
        job.update(delay=5, interval=5)
    with pytest.raises(InvalidScheduleError, match='positive'):
        job.update(interval=0)
    with pytest.raises(InvalidScheduleError, match='number of seconds'):
        job.update(delay='soon')
    assert job.schedule()['delay'] is None     # kept what it had
    service.reschedule(jobid, now=0)
    with pytest.raises(InvalidStatusError, match='reschedule'):
        job = service.claimNextJob(now=60)
        service.reschedule(jobid)


def test_start_job_answers(service):
    jobid = service.add('echo', 'x', startLater=True)
    assert service.startJob(jobid) is True
    assert service.startJob(jobid) is False
    assert service.getStatus(jobid) == QUEUED
    with pytest.raises(KeyError):
        service.startJob(999)
    waiting = service.add('echo', 'x', startLater=True, delay=30, now=0)
    assert service.getStatus(waiting) == STARTLATER
    assert service.startJob(waiting, now=10) is True
    assert service.jobs[waiting].eta == 30


def test_cancelled_provisional_job_stays_cancelled(service):
    jobid = service.addCronJob('echo', minute=(5,))
    service.cancel(jobid)
    assert service.hasJobsWaiting(now=0) is False
    assert service.getStatus(jobid) == CANCELLED
    assert not service._provisional


def test_deleting_a_provisional_job_drops_its_entry(service):
    jobid = service.addCronJob('echo', minute=(5,))
    assert list(service._provisional) == [jobid]
    service.delete(jobid)
    assert not service._provisional


def test_old_repeating_delay_pickles_keep_repeating():
    register('echo', lambda input: input)
    db = ZODB.DB(ZODB.MappingStorage.MappingStorage())
    conn = db.open()
    job = CronJob(1, 'echo', interval=60)
    # What a cron job stored before ``interval`` existed looked like.
    state = dict(job.__getstate__())
    state['delay'] = state.pop('interval')
    old = CronJob.__new__(CronJob)
    old.__setstate__(state)
    assert (old.delay, old.interval, old.repeats()) == (None, 60, True)
    conn.root()['job'] = old
    transaction.commit()
    conn.close()
    conn = db.open()
    again = conn.root()['job']
    assert (again.delay, again.interval) == (None, 60)
    # A new one-off job stays one-off through a pickle.
    once = CronJob(2, 'echo', delay=5)
    copy = pickle.loads(pickle.dumps(once))
    assert (copy.delay, copy.interval, copy.repeats()) == (5, None, False)
    conn.close()
    db.close()


def test_lovely_calls_respect_queue_pauses(service):
    jobid = service.add('echo', 1, queue='slow')
    service.pause(queue='slow')
    service.process(now=0)
    assert service.getStatus(jobid) == QUEUED
    assert service.hasJobsWaiting(now=0) is False
    service.resume(queue='slow')
    service.process(now=0)
    assert service.getStatus(jobid) == COMPLETED
    assert not checkConsistency(service)


def test_a_service_made_before_the_provisional_map_gets_one(service):
    del service._provisional            # as an older pickle has it
    assert service._provisional is None
    jobid = service.addCronJob('echo', minute=(5,))
    assert list(service._provisional) == [jobid]
    assert service.processNext(0) is False
    assert service.jobs[jobid].eta == 300


def test_a_paused_backlog_does_not_hide_later_queued_jobs(service, monkeypatch):
    from remotetask import scheduling
    monkeypatch.setattr(scheduling, 'SCAN', 3)
    held = [service.add('echo', i, queue='slow') for i in range(5)]
    service.pause(queue='slow')
    later = service.add('echo', 'later')
    assert service.processNext(0) is False      # moved 3 paused ones
    assert service.processNext(0) is True       # moved 2 more and 'later'
    assert service.getStatus(later) == COMPLETED
    assert all(service.getStatus(jobid) == QUEUED for jobid in held)

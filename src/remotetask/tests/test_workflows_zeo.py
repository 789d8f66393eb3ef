"""Workflows run by real ``remotetask worker`` processes over a real ZEO
server: a chain passes results, a group's ``then`` fires exactly once with
every result in order (also when a worker is SIGKILLed in the middle), a
failing parent cancels its children with the reason."""
import collections
import signal

import pytest

from remotetask import workflows
from remotetask.interfaces import CANCELLED, COMPLETED, ERROR
from remotetask.testing import checkConsistency
from remotetask.tests import workflowtasks
from remotetask.tests.processingtasks import readLog, records
from remotetask.testing import ServiceClient as Client
from remotetask.tests.test_worker import (  # noqa: F401  (fixtures)
    freezeInTask, waitExit, workers)
from remotetask.tests.workflowtasks import thens

pytestmark = [pytest.mark.zeo, pytest.mark.slow]

TASKS = 'remotetask.tests.workflowtasks'


@pytest.fixture
def client(zeo, request):
    workflowtasks.register()
    c = Client(zeo.uri, 'wf_' + request.node.name)
    yield c
    c.close()


def start(workers, zeo, client, n, *options):
    return [workers(zeo, client.name, '--import', TASKS,
                    '--worker-id', 'w%d' % i, *options) for i in range(n)]


def sound(service):
    assert checkConsistency(service) == []
    assert workflows.check(service) == []


def test_chain_of_three_steps_passes_results(zeo, client, workers):
    ids = client.service.chain([('wf.inc', 1), ('wf.double', None),
                                ('wf.describe', None)])
    client.commit()
    start(workers, zeo, client, 2)
    client.waitFor(lambda s: s.getStatus(ids[-1]) == COMPLETED,
                   what='the chain to complete')
    service = client.service
    assert [service.getResult(i) for i in ids] == [
        2, 4, {'input': 4, 'parents': [4]}]
    sound(service)


def addGroup(client, logpath, count, sleep):
    service = client.service
    steps = [('record', {'n': n, 'log': str(logpath), 'sleep': sleep})
             for n in range(count)]
    ids, then = service.group(steps, then=('wf.then', None))
    records(client.conn, client.name)
    thens(client.conn, client.name)
    client.commit()
    return ids, then


def checkGroup(client, ids, then, count):
    service = client.service
    job = service.jobs[then]
    assert job.status == COMPLETED
    # The then was released once, with every result in the order of the
    # steps, and its run committed once.
    assert job.input == list(range(count))
    assert service.getResult(then) == count
    assert dict(thens(client.conn, client.name)) == {then: 1}
    assert [a['outcome'] for a in job.attempts] == [COMPLETED]
    # Every job of the group committed its work exactly once.
    done = records(client.conn, client.name)
    assert sorted(done.keys()) == list(range(count))
    assert set(done.values()) == {1}
    assert all(service.getStatus(i) == COMPLETED for i in ids)
    assert service.count(COMPLETED) == count + 1
    sound(service)


def test_group_of_200_on_4_workers_fires_then_once(zeo, client, workers,
                                                   tmp_path):
    ids, then = addGroup(client, tmp_path / 'runs.log', 200, 0.005)
    start(workers, zeo, client, 4)
    client.waitFor(lambda s: s.getStatus(then) == COMPLETED, timeout=120,
                   what='the then to complete')
    checkGroup(client, ids, then, 200)
    pids = {pid for event, jobid, pid, claim, n in
            readLog(tmp_path / 'runs.log')}
    assert len(pids) >= 2, 'the group ran on one worker only'


def test_group_with_a_worker_sigkilled_in_the_middle(zeo, client, workers,
                                                    tmp_path):
    logpath = tmp_path / 'runs.log'
    ids, then = addGroup(client, logpath, 200, 0.05)
    procs = start(workers, zeo, client, 4, '--lease', '3')
    victim = procs[0]
    client.waitFor(lambda s: s.count(COMPLETED) >= 40 and any(
        line[0] == 'end' and line[2] == victim.pid
        for line in readLog(logpath)), timeout=120,
        what='40 jobs done, some by w0')
    interrupted = freezeInTask(victim, logpath)
    victim.send_signal(signal.SIGKILL)
    assert waitExit(victim) == -signal.SIGKILL
    client.waitFor(lambda s: s.getStatus(then) == COMPLETED, timeout=180,
                   what='the then to complete')
    checkGroup(client, ids, then, 200)
    service = client.service
    # What the killed worker was running went back to the queue when its
    # lease expired and was run again by another worker.
    for jobid, claim in interrupted:
        attempts = service.jobs[jobid].attempts
        assert attempts[0]['outcome'] == 'lost', attempts
        assert attempts[-1]['outcome'] == COMPLETED
    runs = collections.Counter(jobid for event, jobid, pid, claim, n
                               in readLog(logpath) if event == 'start')
    assert set(runs) == set(ids)


def test_failing_parent_cancels_children_with_the_reason(zeo, client,
                                                         workers):
    service = client.service
    chain = service.chain([('wf.fail', 'x'), ('wf.inc', None),
                           ('wf.inc', None)])
    ids, then = service.group([('wf.inc', 1), ('wf.fail', 'y'),
                               ('wf.inc', 3)], then=('wf.then', None))
    client.commit()
    start(workers, zeo, client, 2)
    client.waitFor(lambda s: s.getStatus(chain[2]) == CANCELLED
                   and s.getStatus(then) == CANCELLED
                   and s.getStatus(ids[2]) == COMPLETED,
                   what='the children to be cancelled')
    service = client.service
    assert service.getStatus(chain[0]) == ERROR
    assert service.getError(chain[1]) == (
        "cancelled: parent job %s ended in error: failed on purpose: 'x'"
        % chain[0])
    assert service.getError(chain[2]) == (
        "cancelled: parent job %s was cancelled; first cause: parent job %s "
        "ended in error: failed on purpose: 'x'" % (chain[1], chain[0]))
    assert service.getError(then) == (
        "cancelled: parent job %s ended in error: failed on purpose: 'y'"
        % ids[1])
    assert dict(thens(client.conn, client.name)) == {}
    sound(service)

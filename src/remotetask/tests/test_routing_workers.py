"""Routing with real ``remotetask worker`` processes over a real ZEO
server: priorities, queues, per-task concurrency across workers, rate
limits, pause and resume (the CLI commands, run as programs)."""
import signal
import subprocess
import sys
import time

import pytest

from remotetask.testing import (
    ServiceClient, WorkerProcesses, remotetaskCommand, stopProcess,
    subprocessEnv)
from remotetask.tests import routingtasks
from remotetask.tests.routingtasks import readLog

pytestmark = [pytest.mark.zeo, pytest.mark.slow]

TASKS = 'remotetask.tests.routingtasks'


class Client(ServiceClient):
    """The test's own connection to the ZEO server, with the log file its
    tasks write to."""

    def __init__(self, uri, name, logpath):
        super().__init__(uri, name)
        self.log = str(logpath)

    def add(self, task, labels, sleep=0.0, **kw):
        service = self.service
        ids = [service.add(task, {'log': self.log, 'label': label,
                                  'sleep': sleep}, **kw)
               for label in labels]
        self.tm.commit()
        return ids

    def statuses(self, ids):
        service = self.service
        return [service.jobs[i].status for i in ids]

    def waitFor(self, predicate, timeout=90.0, what='condition'):
        super().waitFor(predicate, timeout, what, pause=0.05)

    def command(self, *args):
        return subprocess.run(
            remotetaskCommand(*args, '--db', self.uri, '--service',
                              self.name),
            env=subprocessEnv(), capture_output=True, text=True, timeout=120)


@pytest.fixture
def client(zeo, request, tmp_path):
    routingtasks.register()
    c = Client(zeo.uri, 'tasks_' + request.node.name, tmp_path / 'runs.log')
    yield c
    c.close()


@pytest.fixture
def workers(zeo, client, tmp_path):
    procs = WorkerProcesses(tmp_path)

    def start(*options):
        return procs.start(zeo.uri, TASKS, client.name, '--lease', '10',
                           '--poll-interval', '0.2', *options)

    yield start
    procs.close(graceful=True)


def starts(client, task=None):
    return [line for line in readLog(client.log) if line[0] == 'start']


def test_later_high_priority_jobs_overtake_the_backlog(client, workers):
    backlog = client.add('logged', ['low%d' % i for i in range(30)],
                         sleep=0.15)
    workers('--concurrency', '1')
    client.waitFor(lambda s: len(starts(client)) >= 3, what='3 runs')
    high = client.add('logged', ['high%d' % i for i in range(5)],
                      priority=10)
    begun = len(starts(client))
    client.waitFor(lambda s: s.count('completed') == 35, what='all done')
    order = [label for e, j, p, t, label in starts(client)]
    assert sorted(order) == sorted(
        ['low%d' % i for i in range(30)] + ['high%d' % i for i in range(5)])
    first = min(order.index('high%d' % i) for i in range(5))
    # The 5 run one after the other (in about their due order, as claims
    # of workers are: docs/design.md), at most one backlog job after the
    # add (the one running or being claimed when it committed).
    assert sorted(order[first:first + 5]) == ['high%d' % i for i in range(5)]
    assert first <= begun + 1
    assert len([x for x in order[first:] if x.startswith('low')]) >= 20
    assert len(backlog) == 30 and len(high) == 5


def test_a_worker_of_queue_a_leaves_queue_b_alone(client, workers):
    a = client.add('logged', ['a%d' % i for i in range(10)], queue='a')
    b = client.add('logged', ['b%d' % i for i in range(10)], queue='b')
    workers('--concurrency', '2', '--queue', 'a', '--queue', 'nosuchqueue')
    client.waitFor(lambda s: all(s.jobs[i].status == 'completed'
                                 for i in a), what='queue a done')
    time.sleep(1.5)     # several idle polls of the worker
    assert client.statuses(b) == ['queued'] * 10
    workers('--queue', 'b')
    client.waitFor(lambda s: all(s.jobs[i].status == 'completed'
                                 for i in b), what='queue b done')
    ran = {label for e, j, p, t, label in starts(client)}
    assert ran == {'a%d' % i for i in range(10)} | {'b%d' % i
                                                   for i in range(10)}


def waitStarted(tmp_path, count, timeout=60.0):
    """Wait until ``count`` workers logged that their processor runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logs = [tmp_path / ('worker%d.log' % i) for i in range(count)]
        if all(p.exists() and b' started: ' in p.read_bytes()
               for p in logs):
            return
        time.sleep(0.05)
    raise AssertionError('workers did not start')


def test_concurrency_one_never_overlaps_across_two_workers(client, workers,
                                                          tmp_path):
    workers('--concurrency', '4', '--worker-id', 'w1')
    workers('--concurrency', '4', '--worker-id', 'w2')
    waitStarted(tmp_path, 2)
    ids = client.add('single', ['s%d' % i for i in range(16)], sleep=0.1)
    # Other jobs for the threads the capped task leaves free.
    others = client.add('logged', ['o%d' % i for i in range(8)], sleep=0.1)
    client.waitFor(lambda s: all(s.jobs[i].status == 'completed'
                                 for i in ids + others), what='all done')
    log = readLog(client.log)
    runs = {}
    for event, jobid, pid, when, label in log:
        if label.startswith('s'):
            runs.setdefault((jobid, event), []).append((when, pid))
    intervals = sorted((runs[(j, 'start')][0][0], runs[(j, 'end')][-1][0])
                       for j in ids)
    assert len(intervals) == 16
    for (s1, e1), (s2, e2) in zip(intervals, intervals[1:]):
        assert s2 >= e1, 'runs of the concurrency=1 task overlap'
    # The others ran alongside: held-back jobs did not take the threads.
    service = client.service
    workersSeen = {service.jobs[i].worker.split('/')[0] for i in ids}
    assert workersSeen <= {'w1', 'w2'}


def test_rate_limit_five_per_second_over_three_seconds(client, workers):
    client.add('limited', ['r%d' % i for i in range(60)])
    proc = workers('--concurrency', '4')
    client.waitFor(lambda s: starts(client), what='a first start')
    first = starts(client)[0][3]
    while time.time() < first + 3.5:
        time.sleep(0.1)
    stopProcess(proc)
    times = [t for e, j, p, t, label in starts(client)]
    within = [t for t in times if t < first + 3.0]
    assert 5 <= len(within) <= 15 + 5
    assert len(times) < 60


def test_pause_holds_jobs_back_and_resume_releases_them(client, workers):
    out = client.command('pause', '--queue', 'p')
    assert out.returncode == 0 and "paused queue 'p'" in out.stdout
    held = client.add('logged', ['p%d' % i for i in range(5)], queue='p')
    free = client.add('logged', ['d%d' % i for i in range(5)])
    workers('--concurrency', '2')
    client.waitFor(lambda s: all(s.jobs[i].status == 'completed'
                                 for i in free), what='default queue done')
    time.sleep(1.5)
    assert client.statuses(held) == ['queued'] * 5
    assert client.service.pausedCount() == 5
    out = client.command('queues')
    assert out.returncode == 0
    line = [x for x in out.stdout.splitlines() if x.startswith('p ')][0]
    assert line.split()[1:4] == ['5', '0', 'yes']
    out = client.command('resume', '--queue', 'p')
    assert out.returncode == 0 and 'removed 1 pause' in out.stdout
    client.waitFor(lambda s: all(s.jobs[i].status == 'completed'
                                 for i in held), what='queue p done')
    assert client.service.paused() == []


def test_producer_processes_adding_one_unique_key_get_one_job(client,
                                                             tmp_path):
    client.service      # the service exists before the producers start
    client.tm.commit()
    procs = [subprocess.Popen(
        [sys.executable, '-m', TASKS, 'add-unique', client.uri, client.name,
         'report-7', str(tmp_path), str(i), '4'],
        env=subprocessEnv(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True) for i in range(4)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        jobid, conflicts = map(int, out.split())
        results.append((jobid, conflicts))
    # All four transactions added the key at once; one committed, the
    # others conflicted, were retried and found its job.
    assert len({jobid for jobid, c in results}) == 1
    assert sorted(c for jobid, c in results)[0] == 0
    assert sum(c for jobid, c in results) >= 3
    service = client.service
    assert service.count() == 1
    assert list(service.jobs.keys()) == [results[0][0]]


def test_bad_queue_option(client):
    out = subprocess.run(
        remotetaskCommand('worker', '--db', client.uri, '--queue', ' ',
                          '--import', TASKS),
        env=subprocessEnv(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert '--queue' in out.stderr and 'non-blank' in out.stderr
    assert signal.SIGTERM     # (the worker never started)

"""Uptime with real processes: ``remotetask worker`` over a real ZEO
server (cancel of a running cron job, retention while a worker runs)."""
import subprocess
import time

import pytest

from remotetask import db as dbmod
from remotetask.testing import ServiceClient as Client
from remotetask.testing import (
    WorkerProcesses, remotetaskCommand, subprocessEnv)
from remotetask.tests import uptimetasks
from remotetask.tests.uptimetasks import readLog

pytestmark = [pytest.mark.zeo, pytest.mark.slow]

TASKS = 'remotetask.tests.uptimetasks'


@pytest.fixture
def client(zeo, request):
    uptimetasks.register()
    c = Client(zeo.uri, 'tasks_' + request.node.name[:40])
    yield c
    c.close()


@pytest.fixture
def worker(tmp_path, zeo, client):
    procs = WorkerProcesses(tmp_path)

    def start(*options):
        return procs.start(zeo.uri, TASKS, client.name,
                           '--maintenance-interval', '0.5', *options)

    yield start
    procs.close()


def waitLog(path, predicate, timeout=60.0, what='log'):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = readLog(path)
        if predicate(lines):
            return lines
        time.sleep(0.05)
    raise AssertionError('timed out waiting for %s: %s'
                         % (what, readLog(path)))


def test_a_cron_job_cancelled_while_running_is_not_run_again(
        client, worker, tmp_path):
    log = str(tmp_path / 'runs.log')
    jobid = client.service.addCronJob('untilcancelled', {'log': log},
                                      interval=1)
    client.commit()
    proc = worker()
    waitLog(log, lambda lines: len(lines) >= 1, what='a run to start')
    assert client.service.jobs[jobid].status == 'processing'
    client.service.cancel(jobid)
    client.commit()
    client.waitFor(lambda s: s.jobs[jobid].status == 'cancelled',
                   what='the job to end cancelled')
    job = client.service.jobs[jobid]
    assert job.eta is None and job.attempts[-1]['outcome'] == 'cancelled'
    # Its task was told (it logged its end at once), and with a delay of
    # one second the cron job would have run again by now if rescheduled.
    time.sleep(3)
    lines = readLog(log)
    assert [line[0] for line in lines] == ['start', 'end'], lines
    assert client.service.jobs[jobid].status == 'cancelled'
    assert proc.poll() is None


def test_retention_removes_completed_jobs_while_a_worker_runs(
        client, worker, tmp_path):
    from remotetask import retention
    service = client.service
    service.retention['completed'] = 0
    client.commit()
    proc = worker('--concurrency', '2')
    added = 0
    for burst in range(8):
        # (Adds may conflict with the worker's expiry steps: retried, as
        # any producer does; see the notes of bench/soak.py.)
        for attempt in client.tm.attempts(20):
            with attempt:
                service = dbmod.getService(client.conn, client.name)
                for n in range(50):
                    service.add('noop', n)
        added += 50
        time.sleep(0.1)
    try:
        client.waitFor(lambda s: retention.removedCounts(s)['retention']
                       == added, what='every job removed')
    except AssertionError:
        print((tmp_path / 'worker0.log').read_text()[-5000:])
        raise
    service = client.service
    assert service.count() == 0
    assert proc.poll() is None
    proc.terminate()
    proc.wait(60)
    log = (tmp_path / 'worker0.log').read_text()
    # Nothing surfaced: no job failed, nothing was given up or lost.
    assert 'Traceback' not in log and 'gave up' not in log, log[-3000:]
    assert ' lost ' not in log and 'ended error' not in log


# -- supervised worker processes ----------------------------------------------

def childPids(text):
    import re
    return re.findall(r'child (\d+) started', text)


def test_a_busy_looping_job_gets_its_child_killed_and_replaced(
        client, worker, tmp_path):
    log = str(tmp_path / 'spin.log')
    service = client.service
    stuck = service.add('spin', {'log': log}, time_limit=1)
    client.commit()
    proc = worker('--processes', '1', '--kill-after', '2')
    waitLog(log, lambda lines: len(lines) >= 1, what='the spin to start')
    first = readLog(log)[0][2]
    # (Within waitFor's minute: it takes 1 s + 2 s and a tick.)
    client.waitFor(lambda s: s.jobs[stuck].status == 'error'
                   and 'killed' in (s.jobs[stuck].error or ''),
                   what='the job to end error, killed')
    job = client.service.jobs[stuck]
    assert 'time limit' in job.error and 'killed' in job.error, job.error
    # The worker is still up, with a new child that runs jobs.
    after = client.service.add('noop', 'after')
    client.commit()
    client.waitFor(lambda s: s.jobs[after].status == 'completed',
                   what='a job added after it to complete')
    assert proc.poll() is None
    worker_of_after = client.service.jobs[after].worker
    assert worker_of_after.split(':')[1].split('/')[0] != first
    proc.terminate()
    assert proc.wait(60) == 0


def test_a_child_that_dies_is_replaced_and_its_jobs_handed_back_at_once(
        client, worker, tmp_path):
    import os
    import signal as signals
    log = str(tmp_path / 'runs.log')
    jobid = client.service.add('untilcancelled', {'log': log, 'seconds': 1})
    client.commit()
    # A lease of 300 s: only the supervisor can hand the job back soon.
    proc = worker('--processes', '1', '--lease', '300')
    lines = waitLog(log, lambda lines: len(lines) >= 1, what='a start')
    os.kill(int(lines[0][2]), signals.SIGKILL)
    client.waitFor(lambda s: s.jobs[jobid].status == 'completed',
                   timeout=60, what='the job to run again and complete')
    pids = {line[2] for line in readLog(log) if line[0] == 'start'}
    assert len(pids) == 2 and proc.poll() is None
    outcomes = [a['outcome'] for a in client.service.jobs[jobid].attempts]
    assert outcomes == ['handed back', 'completed'], outcomes
    proc.terminate()
    assert proc.wait(60) == 0


def test_children_are_recycled_after_max_jobs(client, worker):
    service = client.service
    ids = [service.add('noop', n) for n in range(12)]
    client.commit()
    proc = worker('--processes', '1', '--max-jobs-per-child', '5',
                  '--batch', '1', '--concurrency', '1')
    client.waitFor(lambda s: all(s.jobs[j].status == 'completed'
                                 for j in ids), what='all jobs')
    workers = {client.service.jobs[j].worker.split('/')[0] for j in ids}
    assert len(workers) >= 3, workers      # 12 jobs, 5 per child
    proc.terminate()
    assert proc.wait(60) == 0


@pytest.mark.parametrize('argv, message', [
    (['--processes', '0'], '--processes'),
    (['--processes', 'two'], '--processes'),
    (['--kill-after', '-1', '--processes', '1'], '--kill-after'),
    (['--max-memory-per-child', '0', '--processes', '1'],
     '--max-memory-per-child'),
    (['--max-jobs-per-child', '3'], 'needs --processes'),
])
def test_bad_supervision_options_are_clear_errors(argv, message, tmp_path):
    done = subprocess.run(
        remotetaskCommand('worker', '--db', str(tmp_path / 'x.fs'), *argv),
        env=subprocessEnv(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and 'Traceback' not in done.stderr


def test_supervised_processes_share_a_filestorage(tmp_path):
    """The supervisor holds the file and serves it (remotetask.embedded);
    its children and the other commands connect to it."""
    path = str(tmp_path / 'Data.fs')
    log = open(str(tmp_path / 'sup.log'), 'wb')
    proc = subprocess.Popen(
        remotetaskCommand('worker', '--db', path, '--processes', '2',
                          '--import', TASKS, '--concurrency', '1'),
        env=subprocessEnv(), stdout=log, stderr=subprocess.STDOUT)
    log.close()
    try:
        def command(*args):
            return subprocess.run(
                remotetaskCommand(*args), env=subprocessEnv(),
                capture_output=True, text=True, timeout=120)
        deadline = time.monotonic() + 60
        while True:
            added = command('add', '--db', path, '--import', TASKS, 'noop',
                            '"shared"')
            if added.returncode == 0:
                break
            assert time.monotonic() < deadline, added.stderr
            time.sleep(0.5)
        jobid = added.stdout.strip()
        deadline = time.monotonic() + 60
        while True:
            status = command('status', '--db', path, jobid)
            if '"completed"' in status.stdout:
                break
            assert time.monotonic() < deadline, (status.stdout,
                                                 status.stderr)
            time.sleep(0.5)
        assert proc.poll() is None
        proc.terminate()
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = (tmp_path / 'sup.log').read_text()
    assert len(childPids(text)) == 2, text[-2000:]


def _running(pid):
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False


def test_children_stop_when_their_supervisor_is_killed(
        client, worker, tmp_path):
    import os
    import signal as signals
    proc = worker('--processes', '2')
    log = tmp_path / 'worker0.log'
    deadline = time.monotonic() + 60
    while len(childPids(log.read_text())) < 2:
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    children = [int(pid) for pid in childPids(log.read_text())]
    os.kill(proc.pid, signals.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 90
    while any(_running(pid) for pid in children):
        assert time.monotonic() < deadline, 'children still running'
        time.sleep(0.2)

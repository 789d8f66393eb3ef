"""``remotetask worker`` processes serving one service over a real ZEO server.

The tasks (``processingtasks.record``) record their input in the job's
transaction and log every run to a file outside the database, so the tests
see both what was committed and what merely ran.
"""
import collections
import re
import signal
import subprocess
import time

import pytest

from remotetask import db as dbmod
from remotetask.testing import ServiceClient as Client
from remotetask.testing import (
    WorkerProcesses, ZEOServer, remotetaskCommand, subprocessEnv)
from remotetask.tests import processingtasks
from remotetask.tests.processingtasks import readLog, records

pytestmark = [pytest.mark.zeo, pytest.mark.slow]

TASKS = 'remotetask.tests.processingtasks'


@pytest.fixture
def client(zeo, request):
    processingtasks.register()
    c = Client(zeo.uri, 'tasks_' + request.node.name)
    yield c
    c.close()


@pytest.fixture
def workers(tmp_path, request):
    procs = WorkerProcesses(tmp_path)

    def start(zeo, name, *options, uri=None):
        return procs.start(uri or zeo.uri, TASKS, name, '--lease', '2',
                           '--maintenance-interval', '1',
                           # One thread unless a test asks for more (the
                           # default is 4): these tests follow one.
                           '--concurrency', '1', *options)

    yield start
    procs.close()


def addJobs(client, logpath, count, sleep=0.0):
    service = client.service
    ids = [service.add('record', {'n': n, 'log': str(logpath),
                                  'sleep': sleep})
           for n in range(count)]
    records(client.conn, client.name)
    client.commit()
    return ids


def waitExit(proc, timeout=60.0):
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError('worker %s did not exit' % proc.pid)


def _stopped(pid):
    with open('/proc/%d/stat' % pid) as f:
        return f.read().rsplit(')', 1)[1].split()[0] == 'T'


def _inTask(lines, pid):
    """(jobid, claim) of the runs ``pid`` started and did not end."""
    started = {(j, c) for e, j, p, c, n in lines if e == 'start' and p == pid}
    ended = {(j, c) for e, j, p, c, n in lines if e == 'end' and p == pid}
    return started - ended


def freezeInTask(proc, logpath, timeout=60.0):
    """SIGSTOP ``proc`` at a moment it is inside a task (its run log has a
    start without an end); return those runs.  A stopped process stays
    as it is: what the log says then is what a SIGKILL interrupts."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc.send_signal(signal.SIGSTOP)
        while not _stopped(proc.pid):
            assert time.monotonic() < deadline, 'worker did not stop'
            time.sleep(0.005)
        running = _inTask(readLog(logpath), proc.pid)
        if running:
            return running
        proc.send_signal(signal.SIGCONT)
        time.sleep(0.02)
    raise AssertionError('worker %s never caught inside a task' % proc.pid)


def test_sigkill_one_of_three_workers_no_job_lost(zeo, client, workers,
                                                  tmp_path):
    logpath = tmp_path / 'runs.log'
    ids = addJobs(client, logpath, 300, sleep=0.02)
    # A lease no live worker on a loaded machine overruns between renewals:
    # only the killed worker may lose jobs.
    procs = [workers(zeo, client.name, '--worker-id', 'w%d' % i,
                     '--lease', '5')
             for i in range(3)]
    victim = procs[0]
    client.waitFor(lambda s: s.count('completed') >= 60 and any(
        line[0] == 'end' and line[2] == victim.pid
        for line in readLog(logpath)), what='60 jobs done, some by w0')
    interrupted = freezeInTask(victim, logpath)
    victim.send_signal(signal.SIGKILL)
    assert waitExit(victim) == -signal.SIGKILL
    workers(zeo, client.name, '--worker-id', 'w3', '--lease', '5')
    client.waitFor(lambda s: s.count('completed') == 300, timeout=90,
                   what='all jobs completed')

    service = client.service
    assert service.counts()['completed'] == 300
    assert service.count() == 300
    # Every input was committed exactly once: none lost, none twice.
    done = records(client.conn, client.name)
    assert sorted(done.keys()) == list(range(300))
    assert set(done.values()) == {1}

    runs = collections.defaultdict(list)
    for event, jobid, pid, claim, n in readLog(logpath):
        runs[jobid].append((event, pid, claim))
    assert sorted(runs) == sorted(ids)
    for jobid, events in runs.items():
        claims = sorted({(claim, pid) for event, pid, claim in events})
        # Runs under earlier claims were the killed worker's only.
        for claim, pid in claims[:-1]:
            assert pid == victim.pid, (jobid, events)
        job = service.jobs[jobid]
        assert job.status == 'completed'
        outcomes = [a['outcome'] for a in job.attempts]
        assert outcomes[-1] == 'completed'
        for attempt in job.attempts[:-1]:
            # Only the killed worker lost jobs (its lease expired).
            assert attempt['outcome'] == 'lost'
            assert attempt['worker'].startswith('w0/'), job.attempts
        assert job.starts == len(job.attempts)
    victims = [jobid for jobid, events in runs.items()
               if any(pid == victim.pid for e, pid, c in events)]
    assert victims, 'the killed worker ran nothing'
    # Jobs it started and never ended went back to the queue (lease
    # expiry) and were started again: their start count grew.
    unfinished = [jobid for jobid, events in runs.items()
                  if ('start', victim.pid) in {(e, p) for e, p, c in events}
                  and ('end', victim.pid) not in {(e, p)
                                                  for e, p, c in events}]
    # It was killed inside a task: that run never ended.
    assert {jobid for jobid, claim in interrupted} <= set(unfinished)
    assert unfinished
    for jobid in unfinished:
        job = service.jobs[jobid]
        assert job.starts == 2
        assert job.attempts[0]['outcome'] == 'lost'
        assert job.attempts[0]['error'] == 'lease expired'


def waitLog(path, text, timeout=60.0):
    deadline = time.monotonic() + timeout
    while text.encode() not in path.read_bytes():
        assert time.monotonic() < deadline, '%r not logged' % text
        time.sleep(0.05)


def test_sigterm_lets_the_running_job_finish(zeo, client, workers, tmp_path):
    logpath = tmp_path / 'runs.log'
    release = tmp_path / 'release'
    service = client.service
    # The job runs until the test creates the file "release".
    first = service.add('record', {'n': 0, 'log': str(logpath), 'sleep': 60,
                                   'until': str(release)})
    records(client.conn, client.name)
    client.commit()
    proc = workers(zeo, client.name, '--grace', '30')
    client.waitFor(lambda s: s.getStatus(first) == 'processing',
                   what='the job to start')
    second = client.service.add('record', {'n': 1, 'log': str(logpath)})
    client.commit()
    proc.send_signal(signal.SIGTERM)
    waitLog(tmp_path / 'worker0.log', 'SIGTERM received')
    release.touch()
    assert waitExit(proc) == 0
    service = client.service
    assert service.getStatus(first) == 'completed'
    assert service.getResult(first) == 0
    # No more claims after the signal; nothing ran twice.
    assert service.getStatus(second) == 'queued'
    assert service.jobs[second].starts == 0
    assert [line[:2] for line in readLog(logpath)] == [('start', first),
                                                       ('end', first)]
    assert dict(records(client.conn, client.name)) == {0: 1}
    # The worker logged the job: start, end, outcome and duration.
    log = (tmp_path / 'worker0.log').read_text()
    assert re.search(r'job %d \(record\) started by \S+/1' % first, log)
    assert re.search(r'job %d \(record\) ended completed in \d+\.\d{3}s'
                     % first, log)
    assert 'SIGTERM received' in log
    assert re.search(r'worker \S+ exits with status 0', log)


def test_grace_over_hands_the_job_back(zeo, client, workers, tmp_path):
    logpath = tmp_path / 'runs.log'
    jobid, = addJobs(client, logpath, 1, sleep=60)
    proc = workers(zeo, client.name, '--grace', '0.5')
    client.waitFor(lambda s: s.getStatus(jobid) == 'processing',
                   what='the job to start')
    proc.send_signal(signal.SIGTERM)
    assert waitExit(proc) == 0
    job = client.service.jobs[jobid]
    assert job.status == 'queued'
    assert job.starts == 1          # it ran: the start counts
    assert job.completed is None    # it did not complete
    assert job.attempts[-1]['outcome'] == 'handed back'
    # The task saw "cancelled" and stopped; its result was dropped.
    assert 0 not in records(client.conn, client.name)


def test_second_signal_exits_at_once_and_another_worker_reaps(
        zeo, client, workers, tmp_path):
    service = client.service
    jobid = service.add('record', {'n': 0, 'log': str(tmp_path / 'runs.log'),
                                   'sleep': 60}, max_starts=1)
    records(client.conn, client.name)
    client.commit()
    proc = workers(zeo, client.name, '--grace', '60')
    client.waitFor(lambda s: s.getStatus(jobid) == 'processing',
                   what='the job to start')
    proc.send_signal(signal.SIGINT)
    # Signals of one kind sent too close together arrive as one.
    waitLog(tmp_path / 'worker0.log', 'SIGINT received')
    proc.send_signal(signal.SIGINT)
    assert waitExit(proc, timeout=20) == 128 + signal.SIGINT
    # Left behind as a zombie: reaped when its lease expires.
    assert client.service.getStatus(jobid) == 'processing'
    # By another worker, which ends it: it reached its max_starts.
    workers(zeo, client.name)
    client.waitFor(lambda s: s.getStatus(jobid) == 'error',
                   what='the zombie to be reaped')
    job = client.service.jobs[jobid]
    assert job.error.startswith('started 1 times, the maximum '
                                '(max_starts=1)')
    assert [a['outcome'] for a in job.attempts] == ['error']
    assert 0 not in records(client.conn, client.name)


def test_invalidations_from_another_client_wake_processors(zeo, client):
    from remotetask.threads import hooks
    service = client.service       # created here if missing
    client.commit()
    lengthOids = {c._p_oid for c in service._queue.counters()}
    other = dbmod.openDB(zeo.uri)
    seen = []
    hooks.add(client.db, seen.append)
    try:
        dbmod.ServiceRunner(other, client.name)(
            lambda s: s.add('record', {}))
        deadline = time.monotonic() + 30
        while not any(lengthOids & set(oids) for oids in seen):
            assert time.monotonic() < deadline, 'no invalidation seen'
            time.sleep(0.02)
    finally:
        hooks.remove(client.db, seen.append)
        other.close()


def test_worker_creates_the_service(zeo, workers, tmp_path):
    name = 'created_by_worker'
    proc = workers(zeo, name, '--concurrency', '8')
    probe = Client(zeo.uri, 'tasks')
    try:
        deadline = time.monotonic() + 60
        while name not in probe.conn.root():
            assert time.monotonic() < deadline, 'no service created'
            time.sleep(0.1)
            probe.tm.begin()
        assert dbmod.getService(probe.conn, name).count() == 0
    finally:
        probe.close()
    log = tmp_path / 'worker0.log'
    while b'started: 8 thread(s)' not in log.read_bytes():
        assert time.monotonic() < deadline, 'processor not started'
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert waitExit(proc) == 0
    # Its database has room for the connections of its 8 threads.
    assert 'open connections' not in log.read_text()


def test_worker_refuses_a_locked_filestorage(tmp_path):
    path = str(tmp_path / 'Data.fs')
    held = dbmod.openDB(path)       # a FileStorage allows one process
    try:
        result = subprocess.run(
            remotetaskCommand('worker', '--db', path, '--import', TASKS),
            env=subprocessEnv(), capture_output=True, text=True, timeout=60)
    finally:
        held.close()
    assert result.returncode == 2
    assert 'the database file://%s is in use by another process' % path \
        in result.stderr
    assert 'run a ZEO server to share it' in result.stderr


def test_worker_rejects_bad_options(zeo):
    result = subprocess.run(
        remotetaskCommand('worker', '--db', zeo.uri, '--concurrency', '0'),
        env=subprocessEnv(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert '--concurrency' in result.stderr
    result = subprocess.run(
        remotetaskCommand('worker', '--db', zeo.uri, '--import', 'no.such'),
        env=subprocessEnv(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "can not import 'no.such'" in result.stderr
    for bad in ('0', 'many', '2.5'):
        result = subprocess.run(
            remotetaskCommand('worker', '--db', zeo.uri, '--batch', bad),
            env=subprocessEnv(), capture_output=True, text=True, timeout=60)
        assert result.returncode == 2
        assert ("Invalid value for '--batch': %r is neither 'auto' nor a "
                "whole number >= 1" % bad) in result.stderr


def test_worker_rides_out_a_zeo_outage(tmp_path, workers):
    processingtasks.register()
    server = ZEOServer(str(tmp_path / 'outage.fs')).start()
    try:
        client = Client(server.uri, 'tasks')
        logpath = tmp_path / 'runs.log'
        addJobs(client, logpath, 40, sleep=0.05)
        # Give up waiting for the server after 1s: the worker sees
        # ClientDisconnected errors during the outage.
        proc = workers(server, client.name, '--concurrency', '2',
                       uri=server.uri + '?wait_timeout=1')
        client.waitFor(lambda s: s.count('completed') >= 10,
                       what='10 jobs done')
        server.stop()
        time.sleep(3.0)
        server.start()
        client.waitFor(lambda s: s.count('completed') == 40,
                       what='all jobs done after the outage')
        assert proc.poll() is None          # still running
        assert set(records(client.conn, client.name).values()) == {1}
        assert len(records(client.conn, client.name)) == 40
        proc.send_signal(signal.SIGTERM)
        assert waitExit(proc) == 0
        client.close()
    finally:
        server.stop()

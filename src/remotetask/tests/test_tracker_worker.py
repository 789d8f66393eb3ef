"""The ATP demo (examples/atp_demo.py) against `remotetask worker` over ZEO:
the worker is the ATP daemon, the demo a producer in another process."""
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from remotetask import tracker
from remotetask.db import ServiceRunner
from remotetask.interfaces import COMPLETED, ERROR
from remotetask.testing import (
    SRC, ZEOServer, remotetaskCommand, stopProcess, subprocessEnv)

try:
    import remotetask.cli  # noqa: F401  (cli registers the worker command)
    import remotetask.worker  # noqa: F401
    NO_WORKER = None
except ImportError as e:  # branch `processing` not merged yet
    NO_WORKER = 'the `remotetask worker` command is not available (%s)' % e

pytestmark = [pytest.mark.zeo, pytest.mark.slow,
              pytest.mark.skipif(NO_WORKER is not None,
                                 reason=NO_WORKER or '')]

DEMO = os.path.join(os.path.dirname(SRC), 'examples', 'atp_demo.py')
DEADLINE = 60.0


def workerEnv():
    """The worker's environment: examples/ on its path too, for it to
    import the demo's handler (``atp_demo.handler``, step 1 of the demo),
    as EOxServer's ATPD imported ``tools.atp_demo.handler``."""
    env = subprocessEnv()
    env['PYTHONPATH'] += os.pathsep + os.path.dirname(DEMO)
    return env


@pytest.fixture
def zeo(tmp_path):
    server = ZEOServer(str(tmp_path / 'Data.fs')).start()
    yield server
    server.stop()


@pytest.fixture
def worker(zeo, tmp_path):
    logpath = tmp_path / 'worker.log'
    with open(logpath, 'wb') as logf:
        proc = subprocess.Popen(
            remotetaskCommand('worker', '--db', zeo.uri, '--import',
                              'remotetask.tracker', '--lease', '2',
                              '--grace', '1', '--poll-interval', '0.2',
                              '--maintenance-interval', '0.3',
                              '--worker-id', 'atpd-1'),
            stdout=logf, stderr=subprocess.STDOUT, env=workerEnv())
    yield proc
    stopProcess(proc)
    print(logpath.read_text())  # shown when a test fails


@pytest.fixture
def facade(zeo):
    database = tracker.configure(zeo.uri)
    yield ServiceRunner(database)
    tracker.unconfigure()


def runDemo(zeo, *args):
    proc = subprocess.run(
        [sys.executable, DEMO, '--db', zeo.uri, '--poll', '0.2',
         '--deadline', str(DEADLINE)] + list(args),
        env=subprocessEnv(), capture_output=True, text=True,
        timeout=DEADLINE + 60)
    return proc.returncode, proc.stdout + proc.stderr


def history(output):
    return re.findall(r'^- .* Status:  (\w+) \t (.*)$', output, re.M)


def test_demo_finishes_with_the_sum(zeo, worker, facade):
    code, out = runDemo(zeo, '--keep', '1', '2', '3', '4', '5')
    assert code == 0, out
    assert 'Status:  FINISHED' in out
    assert "Result:  ('15.0', 'text/xml')" in out
    assert [h[0] for h in history(out)] == [
        'ACCEPTED', 'SCHEDULED', 'RUNNING', 'FINISHED']
    assert 'worker atpd-1' in history(out)[1][1]
    # the task is an ordinary job of the service, committed by the worker
    assert tracker.getTaskResponse('SequenceSum', 'Task001') == (
        '15.0', 'text/xml')
    log = tracker.getTaskLog('SequenceSum', 'Task001')
    assert [rec[0] for rec in log] == sorted(rec[0] for rec in log)
    task_id = facade(lambda s: tracker.trackerdata.getData(s).index[
        ('SequenceSum', 'Task001')])
    job = facade(lambda s: (s.jobs[task_id].status, s.jobs[task_id].output,
                            s.jobs[task_id].worker))
    assert job[:2] == (COMPLETED, '15.0') and job[2].startswith('atpd-1')
    # the worker ran the handler of the demo's step 1
    assert facade(lambda s: tracker.trackerdata.getData(s).types[
        'SequenceSum'].handler) == 'atp_demo.handler'


def test_demo_bad_input_fails_and_is_deleted(zeo, worker, facade):
    code, out = runDemo(zeo, '--identifier', 'Task002', '1', 'x', '3')
    assert code == 1, out
    assert 'Status:  FAILED' in out and 'Result' not in out
    assert history(out)[-1] == ('FAILED',
                                'Input must be a sequence of numbers!')
    with pytest.raises(tracker.TaskNotFound):  # step 7 deleted it
        tracker.getTaskStatusByIdentifier('SequenceSum', 'Task002')
    assert facade(lambda s: s.count()) == 0


def waitFor(check, what):
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError('gave up waiting for %s' % what)


def test_worker_maintenance_fails_zombies_and_deletes_retired(
        zeo, worker, facade, tmp_path):
    tracker.registerTaskType('Slow', 'remotetask.tests.trackerhandlers.'
                             'sleeps', timeout=1, maxrestart=0)
    tracker.registerTaskType('Quick', 'remotetask.tests.trackerhandlers.'
                             'silent', timeret=1)
    marker = tmp_path / 'slow-ended'
    slow = tracker.enqueueTask('Slow', 's', (3, str(marker)))
    quick = tracker.enqueueTask('Quick', 'q', None)
    # the zombie: started once (maxstart 1), not ended within 1 s -> FAILED
    waitFor(lambda: tracker.getTaskStatus(slow)[1] == 'FAILED',
            'the zombie to fail')
    assert 'abandoned' in tracker.getTaskLog('Slow', 's')[-1][2]
    # the quick one ended, then was retired by the worker's maintenance
    waitFor(lambda: not facade(lambda s: quick in s.jobs),
            'the retired task to be deleted')
    with pytest.raises(tracker.TaskNotFound):
        tracker.getTaskStatusByIdentifier('Quick', 'q')
    # once the zombie's handler returned and the worker stopped, its late
    # result was dropped: the task stays FAILED, started once
    waitFor(marker.exists, 'the slow handler to return')
    worker.send_signal(signal.SIGTERM)
    worker.wait(DEADLINE)
    job = facade(lambda s: (s.jobs[slow].status, s.jobs[slow].starts))
    assert job == (ERROR, 1)
    assert tracker.getTaskStatus(slow)[1] == 'FAILED'


def test_running_is_seen_while_the_worker_runs_the_handler(
        zeo, worker, facade, tmp_path):
    tracker.registerTaskType('Gated', 'remotetask.tests.trackerhandlers.'
                             'waits', timeout=120)
    gate = tmp_path / 'gate'
    task_id = tracker.enqueueTask('Gated', 'g', str(gate))
    # the handler runs until we open the gate: others see RUNNING meanwhile
    waitFor(lambda: tracker.getTaskStatus(task_id)[1] == 'RUNNING',
            'the task to be RUNNING')
    assert facade(lambda s: s.jobs[task_id].progress) == (None,
                                                         'ATP RUNNING')
    gate.touch()
    waitFor(lambda: tracker.getTaskStatus(task_id)[1] == 'FINISHED',
            'the task to finish')
    assert tracker.getTaskResponse('Gated', 'g') == ('gate opened',
                                                     'text/plain')
    assert [rec[1][1] for rec in tracker.getTaskLog('Gated', 'g')] == [
        'ACCEPTED', 'SCHEDULED', 'RUNNING', 'FINISHED']

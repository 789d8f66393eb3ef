"""XML-RPC at /RPC2 (in process, and against a real `remotetask serve`)
and /metrics."""
import os
import signal
import subprocess
import time
import xmlrpc.client

import pytest

from remotetask import testing
from remotetask.tests.webhelpers import call, exampleDB, runAll, webApp
from remotetask.tests.webhelpers import db, app  # noqa: F401  fixtures
from remotetask.web import xmlrpc as rpc


def fault(app, method, *params):
    with pytest.raises(xmlrpc.client.Fault) as info:
        call(app, method, *params)
    return info.value.faultCode, info.value.faultString


def test_lovely_methods(app, db):
    assert call(app, 'getAvailableTasks') == ['echo', 'fail', 'sleep', 'sum']
    jobid = call(app, 'add', 'echo', {'foo': 'bar'})
    assert call(app, 'getStatus', jobid) == 'queued'
    assert call(app, 'getResult', jobid) is None
    assert call(app, 'cancel', jobid) is True
    assert call(app, 'getStatus', jobid) == 'cancelled'
    jobid = call(app, 'add', 'echo', {'foo': 'bar'})
    failing = call(app, 'add', 'fail', 'An error occurred.')
    runAll(db)
    assert call(app, 'getStatus', jobid) == 'completed'
    assert call(app, 'getResult', jobid) == {'foo': 'bar'}
    assert call(app, 'getStatus', failing) == 'error'
    assert call(app, 'getError', failing) == 'An error occurred.'
    assert call(app, 'getError', jobid) is None


def test_start_later_and_cron_jobs(app):
    jobid = call(app, 'add', 'echo', 1, True)
    assert call(app, 'getStatus', jobid) == 'start later'
    assert call(app, 'startJob', jobid) is True
    assert call(app, 'getStatus', jobid) == 'queued'
    assert call(app, 'startJob', jobid) is False     # lovely's answer
    assert call(app, 'getStatus', jobid) == 'queued'
    cron = call(app, 'addCronJob', 'echo', 'tick', [0, 30], [3])
    assert call(app, 'getStatus', cron) == 'cronjob'
    # lovely's delay: a one-off delayed job; interval: again and again.
    once = call(app, 'addCronJob', 'echo', None, [], [], [], [], [], 60)
    assert call(app, 'getStatus', once) == 'delayed'
    every = call(app, 'addCronJob', 'echo', None, [], [], [], [], [], None,
                 None, None, 60)
    assert call(app, 'getStatus', every) == 'cronjob'
    expr = call(app, 'addCronJob', 'echo', None, [], [], [], [], [], None,
                '*/5 * * * *', 'Europe/Berlin')
    assert call(app, 'getStatus', expr) == 'cronjob'
    code, message = fault(app, 'addCronJob', 'echo', None, [99])
    assert code == rpc.INVALID_SCHEDULE and 'minute 99' in message


def test_faults(app, db):
    assert fault(app, 'getStatus', 4242) == (rpc.UNKNOWN_JOB,
                                             'no job with id 4242')
    code, message = fault(app, 'add', 'nope', 1)
    assert code == rpc.UNKNOWN_TASK and "unknown task 'nope'" in message
    code, message = fault(app, 'add')
    assert code == rpc.BAD_ARGUMENTS and 'add(task, input=None' in message
    code, message = fault(app, 'getStatus', 1, 2)
    assert code == rpc.BAD_ARGUMENTS
    code, message = fault(app, 'explode')
    assert code == rpc.NO_METHOD and 'getAvailableTasks' in message
    jobid = call(app, 'add', 'echo', 1)
    runAll(db)
    # Too late to cancel: lovely's clients get False, not a fault.
    assert call(app, 'cancel', jobid) is False
    assert call(app, 'getStatus', jobid) == 'completed'
    assert fault(app, 'cancel', 4242)[0] == rpc.UNKNOWN_JOB
    # A result XML-RPC can not carry is a fault, not a 500.
    from remotetask.db import ServiceRunner
    huge = ServiceRunner(db)(lambda s: s.add('echo', {2 ** 40}))
    runAll(db)
    code, message = fault(app, 'getResult', huge)
    assert code == rpc.INVALID_INPUT and 'can not be sent' in message
    for body in (b'<methodCall><bad', b'not xml at all', b'',
                 b'<?xml version="1.0"?><methodCall><methodName>add'
                 b'</methodName><params><param><value><int>x</int>'
                 b'</value></param></params></methodCall>'):
        response = app.post('/RPC2', body, content_type='text/xml')
        with pytest.raises(xmlrpc.client.Fault) as info:
            xmlrpc.client.loads(response.body)
        assert info.value.faultCode == rpc.PARSE_ERROR, body
    app.get('/RPC2', status=405)
    assert call(app, 'system.listMethods') == sorted(rpc.METHODS)
    assert 'add(task, input=None, options=None, after=None)' in call(
        app, 'system.methodHelp', 'add')


def test_a_fault_rolls_back(app, db, monkeypatch):
    def addThenFail(request, task, input=None, startLater=False):
        request.service.add(task, input)
        raise ValueError('changed my mind')
    monkeypatch.setitem(rpc.METHODS, 'add', (rpc.MANAGE, addThenFail))
    assert fault(app, 'add', 'echo', 1) == (rpc.INVALID_VALUE,
                                            'changed my mind')
    assert app.get('/api/counts').json['total'] == 0


def test_tracker_calls(app, db):
    from remotetask import tracker
    tracker.configure(db)
    try:
        tracker.registerTaskType('SequenceSum', 'remotetask.atpdemo.handler')
        tracker.enqueueTask('SequenceSum', 'Task001', (1, 2, 3))
        assert call(app, 'getTaskStatusByIdentifier', 'SequenceSum',
                    'Task001') == [1, 'ACCEPTED']
        code, message = fault(app, 'getTaskResponse', 'SequenceSum',
                              'Task001')
        assert code == rpc.INVALID_VALUE and 'no response' in message
        runAll(db)
        assert call(app, 'getTaskStatusByIdentifier', 'SequenceSum',
                    'Task001') == [5, 'FINISHED']
        assert call(app, 'getTaskResponse', 'SequenceSum', 'Task001') == [
            '6.0', 'text/xml']
        assert fault(app, 'getTaskStatusByIdentifier', 'SequenceSum',
                     'Task999')[0] == rpc.UNKNOWN_JOB
        assert fault(app, 'getTaskStatusByIdentifier', 'Nope',
                     'Task001')[0] == rpc.UNKNOWN_TASK
    finally:
        tracker.unconfigure()


def test_metrics(app, db):
    from remotetask.web.metrics import RECORDER
    before = RECORDER.failed.labels('fail')._value.get()
    call(app, 'add', 'sum', [1, 2])
    call(app, 'add', 'fail', 'no')
    runAll(db)
    call(app, 'add', 'echo', 1, False)
    app.post_json('/api/jobs', {'task': 'echo', 'eta': 1000.0})
    text = app.get('/metrics').text
    assert 'remotetask_jobs{status="completed"} 1.0' in text
    assert 'remotetask_jobs{status="error"} 1.0' in text
    assert 'remotetask_jobs{status="queued"} 2.0' in text
    age = [line for line in text.splitlines()
           if line.startswith('remotetask_queue_oldest_age_seconds ')][0]
    assert float(age.split()[1]) > time.time() - 1000.0 - 60
    assert RECORDER.failed.labels('fail')._value.get() == before + 1
    assert 'remotetask_job_run_seconds_count{task="sum"}' in text
    assert 'remotetask_jobs_processed_total{outcome="error",task="fail"}' \
        in text
    # An aborted run is not counted.
    count = RECORDER.runtime.labels('echo')._sum.get(), \
        RECORDER.processed.labels('echo', 'completed')._value.get()
    import transaction
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    try:
        from remotetask.db import getService
        getService(conn).process()
        tm.abort()
    finally:
        conn.close()
    assert (RECORDER.runtime.labels('echo')._sum.get(),
            RECORDER.processed.labels('echo', 'completed')._value.get()) \
        == count


def test_real_server_process(tmp_path):
    """`remotetask serve` as a real process: XML-RPC over TCP, jobs run by
    its processor, SIGTERM stops it."""
    port = testing.freePort()
    log = open(str(tmp_path / 'serve.log'), 'wb')
    proc = subprocess.Popen(
        testing.remotetaskCommand('serve', '--db', tmp_path / 'Data.fs',
                                  '--port', port),
        stdout=log, stderr=subprocess.STDOUT, env=testing.subprocessEnv(),
        cwd=str(tmp_path))
    try:
        testing.waitForPort(port, 60, proc=proc)
        server = xmlrpc.client.ServerProxy('http://127.0.0.1:%d/RPC2' % port,
                                           allow_none=True)
        # The examples, and the tracker's task (built into every worker).
        assert server.getAvailableTasks() == ['echo', 'fail',
                                              'remotetask.tracker', 'sleep',
                                              'sum']
        jobid = server.add('sum', [1, 2, 3])
        failing = server.add('fail', 'nope')
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if server.getStatus(jobid) == 'completed' and \
                    server.getStatus(failing) == 'error':
                break
            time.sleep(0.1)
        assert server.getResult(jobid) == 6.0
        assert server.getError(failing) == 'nope'
        with pytest.raises(xmlrpc.client.Fault) as info:
            server.getStatus(999999)
        assert info.value.faultCode == rpc.UNKNOWN_JOB
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    output = open(str(tmp_path / 'serve.log')).read()
    assert 'anonymous use, allowed from loopback addresses only' in output
    assert 'remotetask: stopping' in output
    assert os.path.exists(str(tmp_path / 'Data.fs'))

"""A full disk is an answer, not a crash: ``remotetask serve`` on a small
tmpfs (mounted here: needs root, else skipped with the reason)."""
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import xmlrpc.client

import pytest
import ZODB
import ZODB.FileStorage

from remotetask import health, testing
from remotetask.interfaces import DiskFullError

pytestmark = pytest.mark.slow


@pytest.fixture
def smalldisk(tmp_path):
    """A 6 MB tmpfs, unmounted at the end."""
    mount = tmp_path / 'disk'
    mount.mkdir()
    done = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=6m', 'tmpfs',
                           str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip('can not mount a tmpfs: %s' % done.stderr.strip())
    try:
        yield mount
    finally:
        subprocess.run(['umount', '-l', str(mount)])


def fillUp(mount, leave):
    """Fill the disk but ``leave`` bytes; return the filler's path."""
    filler = mount / 'filler'
    stat = os.statvfs(str(mount))
    size = stat.f_bavail * stat.f_frsize - leave
    with open(str(filler), 'wb') as f:
        f.write(b'\0' * max(0, size))
    return filler


def post(url, path, data):
    request = urllib.request.Request(
        url + path, data=json.dumps(data).encode(), method='POST',
        headers={'Content-Type': 'application/json'})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read()), {}
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), dict(e.headers)


def get(url, path):
    with urllib.request.urlopen(url + path, timeout=30) as response:
        body = response.read()
    return body.decode() if path == 'metrics' else json.loads(body)


def test_serve_answers_503_on_a_full_disk_and_recovers(smalldisk, tmp_path):
    path = smalldisk / 'Data.fs'
    port = testing.freePort()
    log = open(str(tmp_path / 'serve.log'), 'wb')
    proc = subprocess.Popen(
        testing.remotetaskCommand('serve', '--db', path, '--port', port,
                                  '--pack-interval', '0'),
        stdout=log, stderr=subprocess.STDOUT, env=testing.subprocessEnv(),
        cwd=str(tmp_path))
    log.close()
    url = 'http://127.0.0.1:%d/' % port
    try:
        testing.waitForPort(port, 60, proc=proc)
        filler = fillUp(smalldisk, health.RESERVE + 200 * 1024)
        acknowledged, refused = [], None
        for n in range(3000):
            status, body, headers = post(url, 'api/jobs', {
                'task': 'echo', 'input': 'x' * 2000})
            if status == 201:
                acknowledged.append(body['id'])
                continue
            refused = (status, body, headers)
            break
        assert refused is not None, 'the disk never filled'
        assert len(acknowledged) > 10
        status, body, headers = refused
        assert status == 503, body
        assert 'disk' in body['error'] and 'full' in body['error']
        assert headers.get('Retry-After')
        assert get(url, 'api/health')['disk_full'] is True
        assert 'remotetask_storage_disk_full 1.0' in get(url, 'metrics')
        rpc = xmlrpc.client.ServerProxy(url + 'RPC2')
        with pytest.raises(xmlrpc.client.Fault) as fault:
            rpc.add('echo', 'y' * 20000)
        assert fault.value.faultCode == 8, fault.value
        assert proc.poll() is None
        # Space comes back: so does everything, by itself.
        os.unlink(str(filler))
        deadline = time.monotonic() + 60
        while True:
            status, body, headers = post(url, 'api/jobs',
                                         {'task': 'echo', 'input': 'after'})
            if status == 201:
                break
            assert time.monotonic() < deadline, body
            time.sleep(0.5)
        acknowledged.append(body['id'])
        deadline = time.monotonic() + 120
        while True:
            counts = get(url, 'api/counts')['counts']
            if counts['completed'] == len(acknowledged):
                break
            assert time.monotonic() < deadline, counts
            time.sleep(0.5)
        deadline = time.monotonic() + 30
        while get(url, 'api/health')['disk_full']:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert 'remotetask_storage_disk_full 0.0' in get(url, 'metrics')
        # Full again, then SIGTERM: a clean exit, one line at most.
        fillUp(smalldisk, 0)
        proc.terminate()
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = (tmp_path / 'serve.log').read_text()
    tail = text[text.find('remotetask: stopping'):]
    assert 'Traceback' not in tail, tail
    # Every job that was acknowledged is there.
    os.unlink(str(smalldisk / 'filler'))
    db = ZODB.DB(ZODB.FileStorage.FileStorage(str(path)))
    try:
        jobs = db.open().root()['tasks'].jobs
        assert all(jobid in jobs for jobid in acknowledged)
    finally:
        db.close()


def test_the_command_line_says_so_in_one_line(smalldisk, tmp_path):
    path = str(smalldisk / 'Data.fs')
    code = subprocess.run(testing.remotetaskCommand(
        'add', '--db', path, '--import', 'remotetask.tests.clitasks',
        'echo', '1'), env=testing.subprocessEnv(), capture_output=True,
        text=True, timeout=60)
    assert code.returncode == 0, code.stderr
    fillUp(smalldisk, 0)
    done = subprocess.run(testing.remotetaskCommand(
        'add', '--db', path, '--import', 'remotetask.tests.clitasks',
        'echo', json.dumps('x' * 100000)), env=testing.subprocessEnv(),
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert 'Traceback' not in done.stderr, done.stderr
    assert 'disk of the database is full' in done.stderr
    assert len(done.stderr.strip().splitlines()) <= 2, done.stderr


def test_disk_full_is_found_in_an_exception_chain():
    try:
        try:
            raise OSError(28, 'No space left on device')
        except OSError as e:
            raise RuntimeError('commit failed') from e
    except RuntimeError as e:
        outer = e
    found = health.diskFull(outer)
    assert found.errno == 28
    error = health.check(outer)
    assert isinstance(error, DiskFullError)
    assert 'No space left on device' in str(error)
    assert health.STATE.full
    health.STATE.noteCommitted()
    assert not health.STATE.full
    assert health.diskFull(ValueError('x')) is None


def test_a_commit_on_a_guarded_file_storage_clears_the_condition(
        tmp_path, monkeypatch):
    """Once space is freed, the next commit that works (a heartbeat, say)
    clears the condition, even if no job is added; one that is refused
    does not."""
    db = ZODB.DB(health.guardFileStorage(
        ZODB.FileStorage.FileStorage(str(tmp_path / 'Data.fs'))))
    try:
        conn = db.open()
        health.STATE.noteFull(OSError(28, 'No space left on device'))
        with monkeypatch.context() as patched:
            patched.setattr(health, 'freeBytes', lambda path: 0)
            conn.root()['x'] = 1
            with pytest.raises(OSError) as refused:
                conn.transaction_manager.commit()
            assert refused.value.errno == 28
            conn.transaction_manager.abort()
        assert health.STATE.full
        conn.root()['x'] = 2
        conn.transaction_manager.commit()
        assert not health.STATE.full
        conn.close()
    finally:
        db.close()
        health.STATE.noteCommitted()

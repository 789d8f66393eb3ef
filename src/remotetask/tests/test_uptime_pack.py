"""Packing (remotetask.packing, ``remotetask pack``, ``--pack-interval``):
a FileStorage opened directly, a ZEO server's storage, RelStorage, and in
the background while jobs run."""
import os
import subprocess

import pytest
import transaction
import ZODB
import ZODB.FileStorage
import zope.component

from remotetask import db as dbmod
from remotetask import packing, retention
from remotetask.service import TaskService
from remotetask.task import SimpleTask
from remotetask.testing import ZEOServer, remotetaskCommand, subprocessEnv
from remotetask.tests.webhelpers import runCommand


def fill(db, jobs=300):
    """Add and finish ``jobs`` jobs, one transaction each, then remove
    them (retention 0): what a queue leaves behind in its file."""
    zope.component.provideUtility(SimpleTask(lambda input: input),
                                  name='echo')
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    root = conn.root()
    if 'tasks' not in root:
        root['tasks'] = TaskService()
    service = root['tasks']
    service.retention['completed'] = 0
    tm.commit()
    for n in range(jobs):
        jobid = service.add('echo', 'x' * 200)
        tm.commit()
        service.processNext(jobid=jobid)
        tm.commit()
    while retention.expire(service, 1e10)[2]:
        tm.commit()
    tm.commit()
    assert service.count() == 0
    conn.close()


def test_pack_a_filestorage_gives_the_space_back(tmp_path):
    path = str(tmp_path / 'Data.fs')
    db = ZODB.DB(ZODB.FileStorage.FileStorage(path))
    fill(db)
    before, after = packing.pack(db)
    assert before == os.path.getsize(path + '.old')
    assert after == os.path.getsize(path) and after < before / 10
    db.close()


def test_remotetask_pack_command_on_a_file(tmp_path):
    path = str(tmp_path / 'Data.fs')
    db = ZODB.DB(ZODB.FileStorage.FileStorage(path))
    fill(db, 100)
    db.close()
    size = os.path.getsize(path)
    code, out = runCommand(['pack', '--db', path])
    assert code == 0 and out.startswith('packed: ')
    assert os.path.getsize(path) < size / 5


def test_remotetask_pack_through_a_zeo_server(tmp_path):
    server = ZEOServer(str(tmp_path / 'zeo.fs')).start()
    try:
        db = dbmod.openDB(server.uri)
        fill(db, 100)
        db.close()
        size = os.path.getsize(str(tmp_path / 'zeo.fs'))
        proc = subprocess.run(remotetaskCommand('pack', '--db', server.uri),
                              env=subprocessEnv(), capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert os.path.getsize(str(tmp_path / 'zeo.fs')) < size / 5
    finally:
        server.stop()


def test_pack_relstorage(postgres):
    db = dbmod.openDB(postgres.uri)
    fill(db, 50)
    before, after = packing.pack(db)
    db.close()
    code, out = runCommand(['pack', '--db', postgres.uri])
    assert code == 0, out


@pytest.mark.parametrize('argv, message', [
    (['pack', '--days', '-1'], '-1'),
    (['pack', '--days', 'soon'], 'soon'),
    (['worker', '--pack-interval', 'daily'], 'daily'),
    (['worker', '--pack-interval', '-5'], '-5'),
    (['serve', '--pack-interval', 'nan?'], 'nan?'),
])
def test_bad_pack_options_are_clear_errors(argv, message, capsys):
    code, out = runCommand(argv)
    err = capsys.readouterr().err
    assert code == 2 and message in err and '--' in err, err


def test_the_packer_packs_in_the_background_while_jobs_run(tmp_path):
    path = str(tmp_path / 'Data.fs')
    db = ZODB.DB(ZODB.FileStorage.FileStorage(path))
    fill(db, 100)
    unpacked = os.path.getsize(path)
    packer = packing.startPacker(db, 0.2)
    assert packer is not None
    try:
        fill(db, 50)            # commits go on while it packs
        import time
        deadline = time.monotonic() + 60
        while packer.packs < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        packer.stop()
    assert packer.packs >= 2 and packer.failures == 0
    before, after = packer.last
    # (The last pack may find nothing left to give back.)
    assert after <= before and os.path.getsize(path) < unpacked
    db.close()
    assert packing.startPacker(db, 0) is None


def test_the_packer_refuses_a_bad_interval():
    for bad in (0, -1, 'x', True):
        with pytest.raises(ValueError, match='pack interval'):
            packing.Packer(None, bad)


def startPackingWorker(tmp_path, interval):
    """A FileStorage in ``tmp_path`` filled with 100 jobs and a worker
    holding it with ``--pack-interval interval`` (its output in
    worker.log): ``(path, size before, Popen)``."""
    path = str(tmp_path / 'Data.fs')
    db = ZODB.DB(ZODB.FileStorage.FileStorage(path))
    fill(db, 100)
    db.close()
    size = os.path.getsize(path)
    with open(tmp_path / 'worker.log', 'wb') as log:
        proc = subprocess.Popen(
            remotetaskCommand('worker', '--db', path,
                              '--pack-interval', interval,
                              '--import', 'remotetask.tests.uptimetasks'),
            env=subprocessEnv(), stdout=log, stderr=subprocess.STDOUT)
    return path, size, proc


def test_a_worker_holding_a_filestorage_packs_it(tmp_path):
    import time
    path, size, proc = startPackingWorker(tmp_path, '0.5')
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            text = (tmp_path / 'worker.log').read_text()
            if 'packed the database' in text:
                break
            assert proc.poll() is None, text
            time.sleep(0.1)
        else:
            raise AssertionError('no pack: ' + text)
        proc.terminate()
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert os.path.getsize(path) < size / 5


def test_remotetask_pack_through_the_process_serving_the_file(tmp_path):
    """A worker holds the FileStorage and serves it (remotetask.embedded):
    ``remotetask pack --db PATH`` packs it through that process."""
    import time
    path, size, proc = startPackingWorker(tmp_path, '0')
    try:
        deadline = time.monotonic() + 60
        # Once it serves the file (its discovery file and a running
        # processor), the pack can only go through it.
        while not (os.path.exists(path + '.zeo') and 'started' in
                   (tmp_path / 'worker.log').read_text()):
            assert proc.poll() is None
            assert time.monotonic() < deadline
            time.sleep(0.1)
        while True:
            done = subprocess.run(remotetaskCommand('pack', '--db', path),
                                  env=subprocessEnv(), capture_output=True,
                                  text=True, timeout=120)
            if done.returncode == 0 and os.path.getsize(path) < size / 5:
                break
            assert proc.poll() is None
            assert time.monotonic() < deadline, done.stderr
            time.sleep(0.5)
        assert done.stdout.startswith('packed: ')
        proc.terminate()
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

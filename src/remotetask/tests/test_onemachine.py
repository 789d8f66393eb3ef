"""One machine, many processes: `remotetask serve`, the commands and extra
workers share the embedded database (a FileStorage served by the process
that holds it through ZEO's own server on a Unix socket), as real
processes."""
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from remotetask import embedded, testing
from remotetask.testing import remotetaskCommand, stopProcess, subprocessEnv

pytestmark = [pytest.mark.slow]

DEADLINE = 90.0

ONLYHERE = '''
"""A task that only the worker started with --import onlyhere has."""
import zope.component

from remotetask.task import SimpleTask


def shout(input):
    return str(input).upper()


def registerTasks():
    zope.component.provideUtility(SimpleTask(shout), name='shout')


registerTasks()
'''

HANDLER = '''
def handler(taskStatus, input):
    taskStatus.storeResponse(str(sum(float(v) for v in input)))
'''


class Machine:
    """A working directory (the default ./var/Data.fs), modules on the
    path of its processes, and the processes started there."""

    def __init__(self, path):
        self.path = path
        self.procs = []
        (path / 'onlyhere.py').write_text(ONLYHERE)
        (path / 'atphandler.py').write_text(HANDLER)
        self.env = subprocessEnv()
        self.env['PYTHONPATH'] += os.pathsep + str(path)
        self.db = str(path / 'var' / 'Data.fs')

    def start(self, name, *args, env=None):
        log = open(str(self.path / ('%s.log' % name)), 'wb')
        proc = subprocess.Popen(remotetaskCommand(*args), cwd=str(self.path),
                                env=env or self.env, stdout=log,
                                stderr=subprocess.STDOUT)
        log.close()
        proc.logname = name
        self.procs.append(proc)
        return proc

    def log(self, name):
        return (self.path / ('%s.log' % name)).read_text()

    def run(self, *args, check=True):
        result = subprocess.run(remotetaskCommand(*args), cwd=str(self.path),
                                env=self.env, capture_output=True, text=True,
                                timeout=DEADLINE)
        if check:
            assert result.returncode == 0, result.stdout + result.stderr
        return result

    def served(self, proc):
        """Wait until ``proc`` serves the database (its discovery file)."""
        deadline = time.monotonic() + DEADLINE
        while True:
            info = embedded.readInfo(self.db)
            if info is not None and info['pid'] == proc.pid:
                return info
            assert proc.poll() is None, self.log(proc.logname)
            assert time.monotonic() < deadline, 'not served'
            time.sleep(0.1)

    def status(self, jobid):
        return json.loads(self.run('status', str(jobid)).stdout)

    def waitFor(self, jobid, status='completed'):
        deadline = time.monotonic() + DEADLINE
        while True:
            info = self.status(jobid)
            if info['status'] == status:
                return info
            assert time.monotonic() < deadline, info
            time.sleep(0.2)

    def workers(self):
        return json.loads(self.run('workers', '--json').stdout)

    def close(self):
        for proc in self.procs:
            stopProcess(proc, timeout=10)


@pytest.fixture
def machine(tmp_path):
    m = Machine(tmp_path)
    yield m
    m.close()


def test_serve_commands_and_a_worker_share_the_default_database(machine):
    port = testing.freePort()
    serve = machine.start('serve', 'serve', '--port', port, '--grace', '5')
    info = machine.served(serve)
    assert info['address'] == machine.db + '.sock'
    assert os.path.exists(machine.db + '.sock')
    testing.waitForPort(port, DEADLINE, proc=serve)
    # The commands, each a process of its own, while serve runs.
    jobid = int(machine.run('add', 'echo', '"x"').stdout)
    assert machine.waitFor(jobid)['result'] == 'x'
    later = int(machine.run('add', 'sum', '[1, 2]', '--start-later').stdout)
    machine.run('cancel', str(later))
    assert machine.status(later)['status'] == 'cancelled'
    counts = machine.run('counts').stdout
    assert 'completed    1' in counts and 'cancelled    1' in counts
    (entry,) = machine.workers()
    assert (entry['kind'], entry['pid']) == ('serve', serve.pid)
    assert 'echo' in entry['tasks'] and 'shout' not in entry['tasks']
    # Nobody runs 'shout' yet: refused, with the list.
    result = machine.run('add', 'shout', '"hi"', check=False)
    assert result.returncode == 1
    assert "unknown task 'shout'; available tasks: echo" in result.stderr
    assert 'Traceback' not in result.stderr
    # A worker beside it, with a task only it has.
    worker = machine.start('worker', 'worker', '--import', 'onlyhere',
                           '--grace', '5')
    deadline = time.monotonic() + DEADLINE
    while len(machine.workers()) < 2:
        assert worker.poll() is None, machine.log('worker')
        assert time.monotonic() < deadline
        time.sleep(0.2)
    kinds = {w['kind']: w for w in machine.workers()}
    assert kinds['worker']['pid'] == worker.pid
    assert 'shout' in kinds['worker']['tasks']
    # add (no --import) accepts it: a live worker runs it.
    ids = [int(machine.run('add', 'shout', '"hi %d"' % i).stdout)
           for i in range(3)]
    for i, jobid in enumerate(ids):
        done = machine.waitFor(jobid)
        assert done['result'] == 'HI %d' % i
        assert done['worker'].startswith('%s:%d/' % (socket.gethostname(),
                                                     worker.pid))
    assert 'tasks: remotetask.tracker, shout' in machine.log('worker')
    # SIGTERM stops both with exit 0; nothing is left behind.
    assert stopProcess(worker) == 0
    assert stopProcess(serve) == 0
    assert embedded.readInfo(machine.db) is None
    assert not os.path.exists(machine.db + '.sock')
    # Afterwards the file opens directly again, and has everything.
    assert machine.status(ids[-1])['status'] == 'completed'
    assert machine.run('workers').stdout.strip() == 'no live workers'


def test_counts_and_the_page_warn_of_jobs_nobody_runs(machine):
    serve = machine.start('serve', 'serve', '--port', testing.freePort(),
                          '--grace', '1')
    machine.served(serve)
    worker = machine.start('worker', 'worker', '--import', 'onlyhere',
                           '--grace', '1')
    deadline = time.monotonic() + DEADLINE
    while len(machine.workers()) < 2:
        assert time.monotonic() < deadline, machine.log('worker')
        time.sleep(0.2)
    jobs = [int(machine.run('add', 'shout', '"later"', '--delay', '3600')
                .stdout) for i in range(3)]
    assert stopProcess(worker) == 0
    result = machine.run('counts')
    assert 'delayed      3' in result.stdout
    assert "warning: 3 jobs of 'shout' waiting; no worker runs it" \
        in result.stderr
    assert "no worker runs it" in machine.run('workers').stderr
    assert stopProcess(serve) == 0
    assert len(jobs) == 3


def test_a_bare_worker_is_the_atp_daemon(machine):
    from remotetask import tracker
    worker = machine.start('atpd', 'worker', '--poll-interval', '0.2')
    machine.served(worker)
    database = tracker.configure(machine.db)
    try:
        tracker.registerTaskType('SequenceSum', 'atphandler.handler', 60,
                                 600, 3)
        tracker.enqueueTask('SequenceSum', 'Task001', ('1', '2', '3'))
        deadline = time.monotonic() + DEADLINE
        while tracker.getTaskStatusByIdentifier(
                'SequenceSum', 'Task001')[1] != 'FINISHED':
            assert time.monotonic() < deadline, machine.log('atpd')
            time.sleep(0.2)
        assert tracker.getTaskResponse('SequenceSum', 'Task001') == (
            '6.0', 'text/xml')
    finally:
        tracker.unconfigure()
        database.close()
    assert stopProcess(worker) == 0
    assert 'only the tracker task is registered' in machine.log('atpd')


def test_a_killed_serve_does_not_block_the_next_one(machine):
    serve = machine.start('serve1', 'serve', '--port', testing.freePort())
    machine.served(serve)
    jobid = int(machine.run('add', 'echo', '1').stdout)
    machine.waitFor(jobid)
    serve.send_signal(signal.SIGKILL)
    serve.wait(DEADLINE)
    # Left behind: the discovery file, the socket, the lock file.
    assert embedded.readInfo(machine.db)['pid'] == serve.pid
    assert os.path.exists(machine.db + '.sock')
    assert os.path.exists(machine.db + '.lock')
    # A command opens the file itself...
    assert machine.status(jobid)['status'] == 'completed'
    # ... and the next serve starts, and serves it.
    port = testing.freePort()
    again = machine.start('serve2', 'serve', '--port', port)
    assert machine.served(again)['pid'] == again.pid
    testing.waitForPort(port, DEADLINE, proc=again)
    second = int(machine.run('add', 'echo', '2').stdout)
    assert machine.waitFor(second)['result'] == 2
    assert stopProcess(again) == 0


def _oneLineError(result, *fragments):
    assert result.returncode != 0
    err = result.stderr.strip()
    assert 'Traceback' not in result.stderr, result.stderr
    assert len(err.splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err


def test_a_file_held_by_a_process_that_does_not_share_it(machine):
    from remotetask import db as dbmod
    held = dbmod.openDB(machine.db)     # a plain FileStorage user
    try:
        for command in (('counts',), ('add', 'echo', '1'), ('workers',)):
            _oneLineError(
                machine.run(*command, check=False),
                'the database file://%s is in use by another process '
                '(pid %d) that does not share it' % (machine.db, os.getpid()))
        # A stale discovery file does not change that.
        with open(machine.db + '.zeo', 'w') as f:
            json.dump({'pid': os.getpid(), 'address': machine.db + '.sock',
                       'version': embedded.VERSION}, f)
        _oneLineError(machine.run('counts', check=False), 'does not share it')
    finally:
        held.close()


def test_stale_socket_and_discovery_file_are_cleared(machine):
    os.makedirs(os.path.dirname(machine.db))
    from ZODB.FileStorage import FileStorage
    FileStorage(machine.db).close()     # as a killed serve leaves it
    # A socket nobody listens on, and a discovery file naming a dead pid.
    s = socket.socket(socket.AF_UNIX)
    s.bind(machine.db + '.sock')
    s.close()
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()
    with open(machine.db + '.zeo', 'w') as f:
        json.dump({'pid': dead.pid, 'address': machine.db + '.sock',
                   'version': embedded.VERSION,
                   'host': socket.gethostname()}, f)
    assert machine.run('counts').returncode == 0
    assert embedded.readInfo(machine.db) is None    # the command removed it
    assert os.path.exists(machine.db + '.sock')     # still there: stale
    worker = machine.start('worker', 'worker')
    assert machine.served(worker)['pid'] == worker.pid
    (entry,) = machine.workers()
    assert entry['pid'] == worker.pid
    assert stopProcess(worker) == 0


OLD = textwrap.dedent('''
    import sys
    import remotetask.version
    remotetask.version.VERSION = '0.9.0'
    from remotetask.cli import main
    main(sys.argv[1:], prog_name='remotetask')
''')


def test_a_worker_of_another_version(machine):
    old = subprocess.Popen(
        [sys.executable, '-c', OLD, 'worker', '--grace', '1'],
        cwd=str(machine.path), env=machine.env,
        stdout=open(str(machine.path / 'old.log'), 'wb'),
        stderr=subprocess.STDOUT)
    old.logname = 'old'
    machine.procs.append(old)
    assert machine.served(old)['version'] == '0.9.0'
    for command in (('counts',), ('worker',), ('serve', '--port', '0')):
        _oneLineError(machine.run(*command, check=False),
                      'is served by remotetask 0.9.0 (pid %d); this is '
                      'remotetask %s' % (old.pid, embedded.VERSION))
    assert stopProcess(old) == 0


def test_serve_grace_hands_back_a_long_job_consistently(machine):
    serve = machine.start('serve', 'serve', '--port', testing.freePort(),
                          '--grace', '1')
    machine.served(serve)
    jobid = int(machine.run('add', 'sleep', '120').stdout)
    machine.waitFor(jobid, 'processing')
    started = time.monotonic()
    serve.send_signal(signal.SIGTERM)
    assert serve.wait(DEADLINE) == 0
    # The grace period (1 s), not the job's 120 s nor a default of 30.
    assert time.monotonic() - started < 20
    job = machine.status(jobid)
    assert job['status'] == 'queued'
    assert job['completed'] is None     # it did not complete
    assert job['starts'] == 1           # it ran: the start counts
    log = machine.log('serve')
    assert 'handed back' in log
    assert 'result dropped' not in log


def test_a_second_signal_stops_serve_at_once(machine):
    serve = machine.start('serve', 'serve', '--port', testing.freePort(),
                          '--grace', '600')
    machine.served(serve)
    jobid = int(machine.run('add', 'sleep', '120').stdout)
    machine.waitFor(jobid, 'processing')
    serve.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + DEADLINE
    while 'SIGTERM received' not in machine.log('serve'):
        assert time.monotonic() < deadline, machine.log('serve')
        time.sleep(0.1)
    serve.send_signal(signal.SIGTERM)
    assert serve.wait(DEADLINE) == 128 + signal.SIGTERM
    # What it left behind does not stop the next command.
    assert machine.status(jobid)['status'] == 'processing'


def test_a_worker_that_can_not_serve_its_file_says_so_and_exits_1(machine):
    # The embedded server starts once the processor runs (docs/startup.md);
    # if it can not (here: a directory where its socket goes), the worker
    # stops, with one line and exit status 1, and leaves the file usable.
    os.makedirs(machine.db + '.sock')
    (machine.path / 'var' / 'Data.fs.sock' / 'x').write_text('')
    proc = machine.start('worker', 'worker', '--grace', '1')
    assert proc.wait(DEADLINE) == 1
    log = machine.log('worker')
    assert 'Traceback' not in log, log
    assert ('ERROR [remotetask.worker] can not share the database file://%s '
            'with the local processes: ' % machine.db) in log, log
    assert embedded.readInfo(machine.db) is None
    assert machine.run('counts').returncode == 0

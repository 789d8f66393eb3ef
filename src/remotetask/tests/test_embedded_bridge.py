"""The process that holds a FileStorage uses it directly and serves it to
the other local processes (``remotetask.embedded.Bridge``): invalidations
cross in both directions, with no stale reads and no lost updates.  Real
processes throughout."""
import os
import subprocess
import sys
import textwrap
import time

import pytest

from remotetask import db as dbmod
from remotetask import embedded
from remotetask.testing import remotetaskCommand, stopProcess, subprocessEnv

pytestmark = [pytest.mark.slow]

DEADLINE = 90.0

#: A process holding the file (openDB(share=True)); commands on stdin:
#: ``set N`` (commit root['value'] = N, print "ok"), ``get`` (a new
#: transaction: print root['value']), ``inc N`` (N increments of
#: root['counter'], one per transaction, retried on ConflictError; print
#: how many committed), ``quit``.
HOLDER = textwrap.dedent('''
    import sys, transaction
    from ZODB.POSException import ConflictError
    from remotetask import db as dbmod
    database = dbmod.openDB(sys.argv[1], share=True)
    assert database.embedded is not None
    from ZODB.FileStorage import FileStorage
    assert isinstance(database.storage, FileStorage), database.storage
    print('ready', flush=True)
    conn = database.open()
    for line in sys.stdin:
        cmd, *args = line.split()
        if cmd == 'set':
            with transaction.manager:
                conn.root()['value'] = int(args[0])
            print('ok', flush=True)
        elif cmd == 'get':
            transaction.begin()
            print(conn.root().get('value'), flush=True)
            transaction.abort()
        elif cmd == 'inc':
            done = 0
            for i in range(int(args[0])):
                try:
                    with transaction.manager:
                        root = conn.root()
                        root['counter'] = root.get('counter', 0) + 1
                    done += 1
                except ConflictError:
                    pass
            print(done, flush=True)
        elif cmd == 'quit':
            break
    conn.close()
    database.close()
''')

#: Another process: ``inc`` over the embedded server (ZEO client).
CLIENT_INC = textwrap.dedent('''
    import sys, transaction
    from ZODB.POSException import ConflictError
    from remotetask import db as dbmod
    database = dbmod.openDB(sys.argv[1])
    assert database.storage.__class__.__name__ == 'ClientStorage'
    conn = database.open()
    done = 0
    for i in range(int(sys.argv[2])):
        try:
            with transaction.manager:
                root = conn.root()
                root['counter'] = root.get('counter', 0) + 1
            done += 1
        except ConflictError:
            pass
    print(done, flush=True)
    conn.close()
    database.close()
''')


class Holder:

    def __init__(self, path):
        self.proc = subprocess.Popen(
            [sys.executable, '-c', HOLDER, path], env=subprocessEnv(),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.ask(None) == 'ready'

    def ask(self, command):
        if command is not None:
            self.proc.stdin.write(command + '\n')
            self.proc.stdin.flush()
        line = self.proc.stdout.readline().strip()
        assert line, 'the holder died'
        return line

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.write('quit\n')
            self.proc.stdin.flush()
            assert self.proc.wait(DEADLINE) == 0


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / 'Data.fs')


def waitServed(path):
    deadline = time.monotonic() + DEADLINE
    while embedded.liveServer(path) is None:
        assert time.monotonic() < deadline, 'not served'
        time.sleep(0.1)


def test_changes_cross_both_ways_at_the_next_transaction(path):
    import transaction
    holder = Holder(path)
    try:
        waitServed(path)
        database = dbmod.openDB(path)       # a ZEO client of the holder
        try:
            assert database.storage.__class__.__name__ == 'ClientStorage'
            tm = transaction.TransactionManager()
            conn = database.open(tm)
            for n in range(1, 30):
                # The holder commits: ZEO delivers the invalidation to
                # us asynchronously; until it arrives we see the previous
                # value, never anything else, then the new one.
                assert holder.ask('set %d' % (2 * n)) == 'ok'
                deadline = time.monotonic() + DEADLINE
                while True:
                    tm.begin()
                    value = conn.root().get('value')
                    tm.abort()
                    if value == 2 * n:
                        break
                    assert value == 2 * n - 1 or (n == 1 and value is None)
                    assert time.monotonic() < deadline, value
                    time.sleep(0.01)
                # We commit through the server: the holder's very next
                # transaction sees it (its invalidations arrive before
                # the storage's last transaction moves).
                with tm:
                    conn.root()['value'] = 2 * n + 1
                assert holder.ask('get') == str(2 * n + 1)
            conn.close()
        finally:
            database.close()
    finally:
        holder.close()


def test_concurrent_increments_on_both_sides_are_never_lost(path):
    holder = Holder(path)
    try:
        waitServed(path)
        clients = [subprocess.Popen(
            [sys.executable, '-c', CLIENT_INC, path, '300'],
            env=subprocessEnv(), stdout=subprocess.PIPE, text=True)
            for i in range(2)]
        mine = int(holder.ask('inc 300'))
        theirs = [int(c.communicate(timeout=DEADLINE)[0]) for c in clients]
        assert all(c.returncode == 0 for c in clients)
        # Lost updates would leave the counter below the number of
        # committed increments.
        committed = mine + sum(theirs)
        assert 0 < committed <= 900
        holder.proc.stdin.write('quit\n')
        holder.proc.stdin.flush()
        assert holder.proc.wait(DEADLINE) == 0
        database = dbmod.openDB(path)       # the file itself now
        try:
            conn = database.open()
            assert conn.root()['counter'] == committed
            conn.close()
        finally:
            database.close()
    finally:
        holder.close()


def test_a_job_added_elsewhere_wakes_the_holders_idle_worker(tmp_path):
    """The holder (``remotetask worker``) polls once a minute here: only
    the bridged invalidation can wake it for a job another process adds
    through the embedded server."""
    path = str(tmp_path / 'Data.fs')
    log = open(str(tmp_path / 'worker.log'), 'wb')
    worker = subprocess.Popen(
        remotetaskCommand('worker', '--db', 'file://' + path,
                          '--import', 'remotetask.examples',
                          '--poll-interval', '60'),
        cwd=str(tmp_path), env=subprocessEnv(), stdout=log,
        stderr=subprocess.STDOUT)
    log.close()
    try:
        deadline = time.monotonic() + DEADLINE
        while embedded.liveServer(path) is None:
            assert worker.poll() is None, \
                (tmp_path / 'worker.log').read_text()
            assert time.monotonic() < deadline, 'not served'
            time.sleep(0.1)
        time.sleep(2.0)         # let it go idle (its first look is done)
        for i in range(3):
            started = time.monotonic()
            result = subprocess.run(
                remotetaskCommand('add', '--db', 'file://' + path, 'echo',
                                  '"w%d"' % i),
                env=subprocessEnv(), capture_output=True, text=True,
                timeout=DEADLINE)
            assert result.returncode == 0, result.stderr
            jobid = result.stdout.strip()
            database = dbmod.openDB(path)
            try:
                while True:
                    conn = database.open()
                    try:
                        job = dbmod.getService(conn).jobs[int(jobid)]
                        status = job.status
                    finally:
                        conn.close()
                    if status == 'completed':
                        break
                    # Well before the 60 s poll: woken by the invalidation.
                    assert time.monotonic() - started < 30, status
                    time.sleep(0.1)
            finally:
                database.close()
    finally:
        assert stopProcess(worker) == 0, (tmp_path / 'worker.log').read_text()


#: A holder that commits ``root['n'].change(1)`` (a ``BTrees.Length``,
#: whose conflicts resolve) as fast as it can until ``quit``; then prints
#: how many it committed.
HOLDER_BUSY = textwrap.dedent('''
    import sys, threading, transaction
    from BTrees.Length import Length
    from remotetask import db as dbmod
    database = dbmod.openDB(sys.argv[1], share=True)
    conn = database.open()
    with transaction.manager:
        conn.root()['n'] = Length()
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()),
                     daemon=True).start()
    print('ready', flush=True)
    done = 0
    while not stop.is_set():
        with transaction.manager:
            conn.root()['n'].change(1)
        done += 1
    print(done, flush=True)
    conn.close()
    database.close()
''')

#: A ZEO client of the holder with a tiny ZEO cache (100 KB): N commits,
#: each ``n.change(1)`` plus a 2 KB object of its own, so the cache
#: evicts all along.  Nobody else writes its own objects: any conflict,
#: and any error or warning ZEO logs, is a failure.
CLIENT_SMALL_CACHE = textwrap.dedent('''
    import logging, sys, transaction
    from persistent.mapping import PersistentMapping
    from ZEO.ClientStorage import ClientStorage
    import ZODB
    from remotetask import embedded
    logged = []
    class Keep(logging.Handler):
        def emit(self, record):
            logged.append(record.getMessage())
    handler = Keep(logging.WARNING)
    logging.getLogger('ZEO').addHandler(handler)
    logging.getLogger('ZEO').setLevel(logging.WARNING)
    address = embedded.liveServer(sys.argv[1])['address']
    storage = ClientStorage(address, cache_size=100000, wait_timeout=60)
    database = ZODB.DB(storage)
    conn = database.open()
    for i in range(int(sys.argv[2])):
        with transaction.manager:
            root = conn.root()
            root['n'].change(1)
            root['mine%d' % (i % 40)] = PersistentMapping(pad='x' * 2000)
    print(storage._cache._n_evicts, flush=True)
    conn.close()
    database.close()
    print(repr(logged), flush=True)
''')


def test_a_small_client_cache_evicts_while_the_holder_commits(path):
    """Issue 10: the ZEO reply to a client's commit named the tid of a
    commit the holder made right after it, so the client's cache labelled
    its own records with the holder's tid; the holder's invalidation
    with that tid left a record ZEO's cache no longer indexed, and the
    client's cache failed (``KeyError`` in ``_makeroom``) when it came to
    evict it (also: wrong-serial ``ConflictError``, ``ValueError: new
    last tid ...``)."""
    holder = subprocess.Popen(
        [sys.executable, '-c', HOLDER_BUSY, path], env=subprocessEnv(),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'ready'
        waitServed(path)
        commits = 400
        client = subprocess.run(
            [sys.executable, '-c', CLIENT_SMALL_CACHE, path, str(commits)],
            env=subprocessEnv(), capture_output=True, text=True,
            timeout=DEADLINE)
        holder.stdin.write('quit\n')
        holder.stdin.flush()
        mine = int(holder.stdout.readline())
        assert holder.wait(DEADLINE) == 0
        assert client.returncode == 0, client.stderr[-3000:]
        evicts, logged = client.stdout.split('\n')[:2]
        assert int(evicts) > 0          # the cache did evict
        assert logged == '[]', logged   # no error or warning from ZEO
        assert mine > 0
        database = dbmod.openDB(path)   # the file itself now
        try:
            conn = database.open()
            assert conn.root()['n']() == mine + commits
            conn.close()
        finally:
            database.close()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(DEADLINE)

"""The ``remotetask.cli`` package: every command is reachable, each command
module imports nothing heavy, and the import circles of old are gone."""
import subprocess
import sys

import pytest

from remotetask import cli
from remotetask.testing import remotetaskCommand, subprocessEnv

HEAVY = ('pyramid', 'waitress', 'ZODB', 'ZEO', 'BTrees', 'zope.schema',
         'zope.component', 'pkg_resources', 'remotetask.service',
         'remotetask.web')


def _imported(code):
    """The top-level names of the modules imported by ``code`` (run in a
    fresh interpreter)."""
    out = subprocess.run(
        [sys.executable, '-c', code + '\nimport sys\n'
         'print("\\n".join(sorted(sys.modules)))'],
        env=subprocessEnv(), capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def _heavy(modules):
    return sorted(m for m in modules
                  if any(m == h or m.startswith(h + '.') for h in HEAVY))


def test_help_lists_every_command_and_imports_nothing_heavy():
    modules = _imported(
        'from remotetask.cli import run\n'
        'import contextlib, io\n'
        'with contextlib.redirect_stdout(io.StringIO()):\n'
        '    assert run(["--help"]) == 0\n')
    assert _heavy(modules) == []
    # --help imported every command module (to show their short help).
    for target in cli.COMMANDS.values():
        assert target.split(':')[0] in modules
    out = subprocess.run(remotetaskCommand('--help'), env=subprocessEnv(),
                         capture_output=True, text=True, check=True).stdout
    for name in cli.COMMANDS:
        assert '  %s ' % name in out


@pytest.mark.parametrize('name', sorted(cli.COMMANDS))
def test_each_command_module_is_light(name):
    module = cli.COMMANDS[name].split(':')[0]
    assert _heavy(_imported('import %s' % module)) == []


def test_the_web_stack_is_loaded_by_serve_only():
    # Running the job commands and a worker needs the ZODB, not Pyramid.
    modules = _imported(
        'from remotetask.cli import common, jobs, worker, tasks\n'
        'import remotetask.db, remotetask.processor, remotetask.worker\n'
        'import remotetask.service\n')
    assert not [m for m in modules if m.startswith(('pyramid', 'waitress',
                                                   'remotetask.web'))]
    assert 'ZODB' in modules      # the check can fail


@pytest.mark.parametrize('first', ['remotetask.processor', 'remotetask.db',
                                   'remotetask.service', 'remotetask.worker',
                                   'remotetask.web.serve',
                                   'remotetask.cli.worker'])
def test_each_module_can_be_imported_first(first):
    # (A module in an import circle often fails when it is imported first:
    # it sees a partially initialised module.)
    _imported('import %s' % first)


def test_processor_and_service_layers_point_one_way():
    modules = _imported('import remotetask.processor')
    assert 'remotetask.db' not in modules
    assert 'remotetask.service' not in modules
    modules = _imported('import remotetask.service')
    assert 'remotetask.processor' not in modules
    assert 'remotetask.db' not in modules
    modules = _imported('import remotetask.worker')
    assert 'remotetask.cli' not in modules


def test_constants_kept_in_the_light_modules_agree():
    from remotetask import db, interfaces
    from remotetask.cli import common, jobs, serve, users
    from remotetask.web import app, auth
    assert common.DEFAULT_SERVICE == db.DEFAULT_SERVICE
    assert jobs.CLEANABLE == interfaces.CLEANABLE_STATUSES
    assert serve.MAX_BODY == app.MAX_BODY
    assert users.ROLES == auth.ROLES


def test_the_package_root_names_are_imported_on_first_use():
    modules = _imported('import remotetask')
    assert 'remotetask.service' not in modules
    import remotetask
    from remotetask.service import TaskService
    assert remotetask.TaskService is TaskService
    with pytest.raises(AttributeError):
        remotetask.NoSuchName


def test_a_processor_is_handed_its_service(tmp_path):
    import transaction

    from remotetask import db as dbmod
    from remotetask.interfaces import ServiceNotStoredError
    from remotetask.processor import Processor
    from remotetask.service import TaskService
    database = dbmod.openDB('memory://')
    try:
        dbmod.ensureService(database, 'other')
        tm = transaction.TransactionManager()
        conn = database.open(tm)
        service = conn.root()['other']
        p = Processor(database, service)
        assert (p.oid, p.name) == (service._p_oid, 'other')
        conn.close()
        with pytest.raises(ServiceNotStoredError):
            Processor(database, TaskService())
    finally:
        database.close()


def test_a_job_command_on_a_file_loads_no_zeo_client_and_no_web(tmp_path):
    # `remotetask status` on a file nobody serves: it opens the file
    # itself, without zodburi's resolvers (which load ZEO's client and
    # asyncio), croniter or the web stack.
    path = str(tmp_path / 'Data.fs')
    from ZODB.FileStorage import FileStorage
    FileStorage(path).close()       # counts refuses a file that is missing
    modules = _imported(
        'from remotetask.cli import run\n'
        'import contextlib, io\n'
        'with contextlib.redirect_stdout(io.StringIO()):\n'
        '    assert run(["counts", "--db", %r]) == 0\n' % path)
    for name in ('zodburi', 'ZEO.ClientStorage', 'croniter', 'pyramid',
                 'waitress', 'remotetask.web'):
        assert name not in modules, name
    assert 'ZODB.FileStorage' in modules


def test_the_users_command_loads_no_web_stack(tmp_path):
    users = str(tmp_path / 'users.json')
    modules = _imported(
        'from remotetask.cli import run\n'
        'import contextlib, io, sys\n'
        'sys.stdin = io.StringIO("pw-12345678\\n")\n'
        'with contextlib.redirect_stdout(io.StringIO()):\n'
        '    assert run(["user", "add", "--users", %r, "ann", "--role",'
        ' "viewer"]) == 0\n'
        '    assert run(["user", "list", "--users", %r]) == 0\n'
        % (users, users))
    assert not [m for m in modules if m.startswith(('pyramid', 'waitress'))]
    assert 'remotetask.web.auth' in modules


# -- what the fast commands load (issue 10: "Fast commands") ---------------

#: Modules that `status` and a worker's start do not need: the web stack,
#: zope.schema (the interfaces use plain attributes), the PostgreSQL driver
#: (retry.disconnectErrors looks at it only once RelStorage loaded it), the
#: zodburi resolvers and ZEO's client (a file nobody serves is opened
#: directly), croniter (cron jobs only), pkg_resources.
NOT_FOR_STATUS = ('pyramid', 'waitress', 'remotetask.web', 'zope.schema',
                  'psycopg2', 'zodburi', 'ZEO.ClientStorage', 'croniter',
                  'pkg_resources', 'ZEO.StorageServer', 'asyncio',
                  'remotetask.processor', 'remotetask.zcml')
NOT_FOR_WORKER = ('pyramid', 'waitress', 'remotetask.web', 'zope.schema',
                  'psycopg2', 'zodburi', 'ZEO.ClientStorage',
                  'pkg_resources', 'remotetask.zcml')


def _loaded(modules, names):
    return sorted(n for n in names if n in modules)


def test_status_on_a_file_loads_only_what_it_needs(tmp_path):
    path = str(tmp_path / 'Data.fs')
    subprocess.run(remotetaskCommand('add', '--db', path, '--import',
                                     'remotetask.tracker',
                                     'remotetask.tracker', 'null',
                                     '--start-later'),
                   env=subprocessEnv(), check=True, capture_output=True)
    modules = _imported(
        'from remotetask.cli import run\n'
        'import contextlib, io\n'
        'out = io.StringIO()\n'
        'with contextlib.redirect_stdout(out):\n'
        '    assert run(["status", "--db", %r, "1"]) == 0\n'
        'assert \'"status": "start later"\' in out.getvalue()\n' % path)
    assert _loaded(modules, NOT_FOR_STATUS) == []
    assert 'remotetask.service' in modules      # the check can fail


WORKER_SNAPSHOT = r'''
import logging, os, signal, sys
from remotetask.cli import run

class Snapshot(logging.Handler):
    # At "processor ... started": write the loaded modules, then stop.
    def emit(self, record):
        message = record.getMessage()
        if message.startswith('processor ') and ' started:' in message:
            with open(%(out)r, 'w') as f:
                f.write('\n'.join(sorted(sys.modules)))
            os.kill(os.getpid(), signal.SIGTERM)

logging.basicConfig(level=logging.INFO)
logging.getLogger('remotetask.worker').addHandler(Snapshot())
sys.exit(run(['worker', '--db', %(db)r, '--grace', '1']))
'''


def test_a_worker_starts_with_only_what_it_needs(tmp_path):
    out = tmp_path / 'modules.txt'
    code = WORKER_SNAPSHOT % {'out': str(out),
                              'db': str(tmp_path / 'Data.fs')}
    proc = subprocess.run([sys.executable, '-c', code], env=subprocessEnv(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    modules = set(out.read_text().split())
    assert _loaded(modules, NOT_FOR_WORKER) == []
    assert 'remotetask.processor' in modules    # the check can fail


def test_the_program_sets_the_collector_and_run_does_not(tmp_path):
    # remotetask.startup: the collector is off during the program's
    # start-up, back on (with the start-up's objects frozen) once the
    # database is open; `run()` (in-process, tests) leaves it alone.
    path = str(tmp_path / 'Data.fs')
    code = (
        'import gc, sys\n'
        'from remotetask import startup\n'
        'from remotetask.cli import common, run\n'
        'assert run(["add", "--db", %r, "--import", "remotetask.tracker",'
        ' "remotetask.tracker", "null", "--start-later"]) == 0\n'
        'assert run(["counts", "--db", %r]) == 0\n'
        'assert gc.isenabled() and gc.get_freeze_count() == 0\n'
        'startup.begin()\n'
        'assert not gc.isenabled()\n'
        'database = common.openDatabase(%r)\n'
        'assert gc.isenabled() and gc.get_freeze_count() > 1000\n'
        'database.close()\n' % (path, path, path))
    subprocess.run([sys.executable, '-c', code], env=subprocessEnv(),
                   check=True, capture_output=True)

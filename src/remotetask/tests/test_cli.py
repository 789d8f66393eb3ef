"""The core subcommands of the ``remotetask`` command."""
import json
import subprocess

from remotetask.cli import run
from remotetask.testing import remotetaskCommand, subprocessEnv


def test_add_status_counts_cancel_clean(tmp_path, capsys):
    db = ['--db', str(tmp_path / 'Data.fs'), '--import',
          'remotetask.tests.clitasks']
    assert run(['add'] + db + ['echo', '{"a": 1}']) == 0
    assert capsys.readouterr().out.strip() == '1'
    assert run(['add'] + db + ['echo', '2', '--start-later']) == 0
    capsys.readouterr()
    assert run(['status'] + db + ['1']) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info['id'], info['task'], info['status']) == (1, 'echo', 'queued')
    assert run(['cancel'] + db + ['2']) == 0
    assert run(['counts'] + db) == 0
    out = capsys.readouterr().out
    assert 'queued       1' in out and 'cancelled    1' in out
    assert run(['clean'] + db) == 0
    assert capsys.readouterr().out.strip() == 'removed 1 job'


def test_the_database_from_the_environment(tmp_path, monkeypatch, capsys):
    path = tmp_path / 'env' / 'Data.fs'
    monkeypatch.setenv('REMOTETASK_DB', str(path))
    tasks = ['--import', 'remotetask.examples']
    assert run(['add'] + tasks + ['echo', '1']) == 0
    assert capsys.readouterr().out.strip() == '1'
    assert path.exists()
    assert run(['counts']) == 0
    assert 'queued       1' in capsys.readouterr().out
    # --db still wins over the environment.
    assert run(['counts', '--db', str(tmp_path / 'Other.fs')]) == 2
    assert 'no database at' in capsys.readouterr().err


def test_errors_are_clear(tmp_path, capsys):
    db = ['--db', str(tmp_path / 'Data.fs'), '--import',
          'remotetask.tests.clitasks']
    assert run(['add'] + db + ['nope']) == 1
    assert "unknown task 'nope'" in capsys.readouterr().err
    assert run(['add'] + db + ['echo', '{bad json']) == 2
    assert 'not JSON' in capsys.readouterr().err
    assert run(['status'] + db + ['99']) == 1
    assert 'no job with id 99' in capsys.readouterr().err
    assert run(['add', '--db', 'nosuch://x', 'echo']) == 2
    assert 'unsupported database URI' in capsys.readouterr().err
    assert run(['tasks', '--import', 'no.such.module']) == 2
    assert "can not import 'no.such.module'" in capsys.readouterr().err


def test_command_runs_as_a_program(tmp_path):
    out = subprocess.run(
        remotetaskCommand('tasks', '--zcml', _examples()), cwd=str(tmp_path),
        env=subprocessEnv(), capture_output=True, text=True, check=True)
    assert out.stdout.split() == ['echo', 'fail', 'sleep', 'sum']


def _examples():
    import os

    import remotetask
    return os.path.join(os.path.dirname(remotetask.__file__), 'examples.zcml')


def test_tasks_explains_where_names_come_from(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)         # no ./var/Data.fs here
    assert run(['tasks']) == 1
    err = capsys.readouterr().err
    assert 'no tasks' in err and '--import remotetask.examples' in err
    # Batteries included: the examples register when imported (and again
    # after the component registry was cleaned, as between these tests).
    assert run(['tasks', '--import', 'remotetask.examples']) == 0
    assert capsys.readouterr().out.split() == ['echo', 'fail', 'sleep', 'sum']


def test_add_with_the_examples_imported(tmp_path, capsys):
    db = ['--db', str(tmp_path / 'Data.fs')]
    assert run(['add'] + db + ['echo', '"x"']) == 1
    err = capsys.readouterr().err
    assert "unknown task 'echo'; available tasks: none" in err
    # It says how a task becomes known.
    assert '--import MODULE' in err and 'remotetask tasks' in err
    assert run(['add'] + db + ['--import', 'remotetask.examples', 'echo',
                               '"x"']) == 0
    assert capsys.readouterr().out.strip() == '1'

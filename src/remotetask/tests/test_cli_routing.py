"""The routing commands: add --queue/--priority/--unique-key, queues,
pause, resume, retry, purge, delete."""
import json

import pytest
import zope.component
from click.testing import CliRunner

from remotetask.cli import main, run
from remotetask.task import SimpleTask


@pytest.fixture
def db(tmp_path):
    zope.component.provideUtility(SimpleTask(lambda x: x), name='echo')
    return ['--db', str(tmp_path / 'Data.fs')]


def out(capsys):
    return capsys.readouterr().out


def status(db, capsys, jobid):
    assert run(['status'] + db + [str(jobid)]) == 0
    return json.loads(out(capsys))


def test_add_with_routing_options(db, capsys):
    assert run(['add'] + db + ['echo', '1', '--queue', 'mail',
                               '--priority', '5', '--unique-key', 'k1']) == 0
    jobid = int(out(capsys))
    assert run(['add'] + db + ['echo', '2', '--unique-key', 'k1']) == 0
    assert int(out(capsys)) == jobid
    info = status(db, capsys, jobid)
    assert (info['queue'], info['priority'], info['unique_key']) == (
        'mail', 5, 'k1')
    assert run(['queues'] + db) == 0
    lines = out(capsys).splitlines()
    assert lines[0].split()[:3] == ['queue', 'waiting', 'processing']
    assert [x.split()[:4] for x in lines[1:]] == [
        ['default', '0', '0', 'no'], ['mail', '1', '0', 'no']]


def test_bad_routing_input(db, capsys):
    assert run(['add'] + db + ['echo', '--priority', 'high']) == 2
    assert "'high' is not a valid integer" in capsys.readouterr().err
    assert run(['add'] + db + ['echo', '--priority', '5000']) == 1
    assert 'priority must be between -1000 and 1000' in \
        capsys.readouterr().err
    assert run(['add'] + db + ['echo', '--queue', '']) == 1
    assert 'queue must be a non-blank' in capsys.readouterr().err
    assert run(['retry'] + db) == 2
    assert 'give either a JOBID or --all' in capsys.readouterr().err
    assert run(['retry'] + db + ['3', '--queue', 'a']) == 2
    assert run(['pause'] + db + ['--queue', ' ']) == 1
    assert 'non-blank' in capsys.readouterr().err


def test_pause_resume(db, capsys):
    assert run(['pause'] + db + ['--queue', 'a']) == 0
    assert out(capsys).strip() == "paused queue 'a'"
    assert run(['pause'] + db + ['--queue', 'a']) == 0
    assert out(capsys).strip() == "queue 'a' was paused already"
    assert run(['pause'] + db + ['--task', 'echo']) == 0
    assert run(['add'] + db + ['echo', '1', '--queue', 'a']) == 0
    out(capsys)
    assert run(['counts'] + db) == 0
    assert 'paused       1' in out(capsys)
    assert run(['queues'] + db) == 0
    text = out(capsys)
    assert "paused: task 'echo'" in text
    assert [x.split()[3] for x in text.splitlines()
            if x.startswith('a ')] == ['yes']
    assert run(['resume'] + db) == 0
    assert out(capsys).strip() == 'removed 2 pauses'


def test_pause_of_a_queue_no_job_used_says_so(db, capsys):
    assert run(['add'] + db + ['echo', '1', '--queue', 'a']) == 0
    out(capsys)
    assert run(['pause'] + db + ['--queue', 'a']) == 0
    assert capsys.readouterr().err == ''
    assert run(['pause'] + db + ['--queue', 'aa']) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == "paused queue 'aa'"
    assert "no job has used queue 'aa' yet" in captured.err


def test_commands_refuse_a_database_file_that_is_missing(db, tmp_path, capsys):
    # (db: the fixture registers the task echo)
    missing = str(tmp_path / 'typo' / 'Data.fs')
    for command in (['status', '1'], ['counts'], ['cancel', '1'], ['clean'],
                    ['workers'], ['queues'], ['resume'], ['purge'],
                    ['pack']):
        assert run(command + ['--db', missing]) == 2, command
        err = capsys.readouterr().err
        assert 'no database at %s' % missing in err, (command, err)
        assert 'Traceback' not in err
    assert not (tmp_path / 'typo' / 'Data.fs').exists()
    # file:// URIs too; add creates it.
    uri = 'file://' + missing
    assert run(['counts', '--db', uri]) == 2
    capsys.readouterr()
    assert run(['add', '--db', uri, 'echo', '1']) == 0
    assert (tmp_path / 'typo' / 'Data.fs').exists()
    assert run(['counts', '--db', uri]) == 0


def test_retry_purge_delete(db, capsys, tmp_path):
    import ZODB.FileStorage
    import ZODB
    storage = ZODB.FileStorage.FileStorage(db[1])
    database = ZODB.DB(storage)
    from remotetask.service import TaskService
    with database.transaction() as conn:
        service = conn.root()['tasks'] = TaskService()
        failed = [service.add('echo', i, queue=q) for i, q in
                  enumerate(['a', 'a', 'b'])]
        for job in service.claim(limit=3):
            service._fail(job, 'boom', None, None)
        waiting = [service.add('echo', i, queue='a') for i in range(4)]
    database.close()
    assert run(['retry'] + db + ['--all', '--queue', 'a', '--dry-run']) == 0
    assert out(capsys).strip() == \
        "would queue again 2 failed jobs of queue 'a'"
    assert run(['retry'] + db + [str(failed[2])]) == 0
    assert out(capsys).strip() == 'queued job %d again' % failed[2]
    assert run(['retry'] + db + ['--all']) == 0
    assert out(capsys).strip() == 'queued again 2 failed jobs of everything'
    runner = CliRunner()
    result = runner.invoke(main, ['purge'] + db + ['--queue', 'a'],
                           input='n\n')
    assert 'Cancel 6 waiting jobs of queue \'a\'? [y/N]' in result.output
    assert result.exit_code == 1
    result = runner.invoke(main, ['purge'] + db + ['--queue', 'a'],
                           input='y\n')
    assert result.exit_code == 0
    assert "cancelled 6 waiting jobs of queue 'a'" in result.output
    assert run(['delete'] + db + ['--status', 'cancelled', '--dry-run']) == 0
    assert out(capsys).strip() == 'would delete 6 jobs'
    assert run(['delete'] + db + ['--status', 'cancelled', '--yes']) == 0
    assert out(capsys).strip() == 'deleted 6 jobs'
    assert run(['counts'] + db) == 0
    assert 'queued       1' in out(capsys)
    assert waiting


def test_bulk_commands_run_in_steps(db, capsys, monkeypatch):
    # 35 failed jobs, steps of 10: four transactions, the total printed.
    import ZODB
    import ZODB.FileStorage
    from remotetask import bulk
    from remotetask import db as dbmod
    from remotetask.service import TaskService
    zope.component.provideUtility(SimpleTask(lambda x: 1 / 0), name='boom')
    database = ZODB.DB(ZODB.FileStorage.FileStorage(db[1]))
    with database.transaction() as conn:
        service = conn.root()['tasks'] = TaskService()
        for i in range(35):
            service.processNext(jobid=service.add('boom', i, now=0), now=1)
        assert service.count('error') == 35
    database.close()
    monkeypatch.setattr(bulk, 'BATCH', 10)
    steps = []
    call = dbmod.ServiceRunner.__call__

    def counted(self, func, *args, **kw):
        result = call(self, func, *args, **kw)
        steps.append(getattr(result, 'count', None))
        return result
    monkeypatch.setattr(dbmod.ServiceRunner, '__call__', counted)
    assert run(['retry'] + db + ['--all', '--task', 'boom']) == 0
    assert out(capsys).strip() == \
        "queued again 35 failed jobs of task 'boom'"
    assert steps == [10, 10, 10, 5]
    del steps[:]
    assert run(['purge'] + db + ['--task', 'boom', '--yes']) == 0
    assert out(capsys).strip() == \
        "cancelled 35 waiting jobs of task 'boom'"
    # the dry run's count, then the purge, in steps of 10
    assert steps == [10, 10, 10, 5] * 2
    del steps[:]
    assert run(['delete'] + db + ['--status', 'cancelled', '--yes']) == 0
    assert out(capsys).strip() == 'deleted 35 jobs'
    # (no filter: the dry run counts with the status counters, at once)
    assert steps == [35, 10, 10, 10, 5]


def test_bulk_commands_refuse_bad_filters(db, capsys):
    assert run(['add'] + db + ['echo', '1']) == 0
    out(capsys)
    assert run(['purge'] + db + ['--queue', ' ', '--yes']) == 1
    assert 'non-blank' in capsys.readouterr().err


def test_statuses_kept_in_the_light_module_agree():
    from remotetask.cli import routing
    from remotetask.interfaces import STATUSES
    assert routing.STATUSES == STATUSES

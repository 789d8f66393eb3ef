"""Bad input on the command line: an error message, never a traceback."""
import pytest
import transaction
from BTrees.OOBTree import OOBTree

from remotetask import db as dbmod
from remotetask.cli import run


@pytest.mark.parametrize('source, message', [
    ("raise RuntimeError('no config')\n",
     "can not import 'brokenmod': RuntimeError: no config"),
    ('def f(:\n', "can not import 'brokenmod': SyntaxError: "),
])
def test_a_module_that_fails_on_import(tmp_path, monkeypatch, capsys,
                                       source, message):
    (tmp_path / 'brokenmod.py').write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    for command in (['tasks'], ['worker', '--db', 'memory://']):
        assert run(command + ['--import', 'brokenmod']) == 2
        err = capsys.readouterr().err
        assert message in err and 'Traceback' not in err


def test_a_root_key_that_is_not_a_service(tmp_path, capsys):
    path = str(tmp_path / 'Data.fs')
    database = dbmod.openDB(path)
    tm = transaction.TransactionManager()
    conn = database.open(tm)
    conn.root()['other'] = OOBTree()
    tm.commit()
    conn.close()
    database.close()
    for command in ('counts', 'clean'):
        assert run([command, '--db', path, '--service', 'other']) == 1
        err = capsys.readouterr().err
        assert "'other' at the database root is a OOBTree, not a " \
            "TaskService" in err


def test_zeo_same_tid_invalidation_warning_is_not_printed():
    # A short command against a served database used to end with a
    # stream of "Ignoring invalidation with same tid as current" lines on
    # stderr (ZEO's harmless warning); the CLI drops that one message and
    # only that one.
    import logging
    import remotetask.cli.common  # noqa: F401 (installs the filter)
    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    logger = logging.getLogger('ZEO.cache')
    handler = Keep()
    logger.addHandler(handler)
    try:
        logger.warning('Ignoring invalidation with same tid as current')
        logger.warning('some other cache trouble')
    finally:
        logger.removeHandler(handler)
    assert seen == ['some other cache trouble']

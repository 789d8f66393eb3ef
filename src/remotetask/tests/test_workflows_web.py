"""Workflows in the JSON API, XML-RPC, the command line and the page."""
import json
import xmlrpc.client

import pytest

from remotetask.cli import run
from remotetask.tests.webhelpers import EXAMPLES, call, runAll
from remotetask.tests.webhelpers import db, app  # noqa: F401  fixtures
from remotetask.web import xmlrpc as rpc


# -- JSON API -----------------------------------------------------------------

def test_add_after_and_detail(app, db):
    first = app.post_json('/api/jobs', {'task': 'echo', 'input': 1},
                          status=201).json
    child = app.post_json('/api/jobs',
                          {'task': 'echo', 'after': [first['id']]},
                          status=201).json
    assert child['status'] == 'deferred'
    assert child['parents'] == [first['id']]
    assert child['waiting_for'] == 1 and child['waiting_on'] == [first['id']]
    parent = app.get('/api/jobs/%d' % first['id']).json
    assert parent['children'] == [child['id']]
    assert parent['children_total'] == 1
    assert app.get('/api/counts').json['counts']['deferred'] == 1
    page = app.get('/api/jobs?status=deferred').json
    assert [j['id'] for j in page['jobs']] == [child['id']]
    runAll(db)
    assert app.get('/api/jobs/%d' % child['id']).json['status'] == \
        'completed'


def test_chains_and_groups(app, db):
    chain = app.post_json('/api/chains', {'steps': [
        {'task': 'echo', 'input': [1, 2, 3]}, {'task': 'sum'},
        ['echo', None]]}, status=201).json
    ids = chain['ids']
    assert [j['status'] for j in chain['jobs']] == ['queued', 'deferred',
                                                   'deferred']
    group = app.post_json('/api/groups', {
        'steps': [['echo', 1], ['echo', 2], {'task': 'echo', 'input': 3}],
        'then': {'task': 'sum'}}, status=201).json
    assert len(group['ids']) == 3 and group['then'] == group['jobs'][-1]['id']
    runAll(db)
    assert app.get('/api/jobs/%d' % ids[2]).json['result'] == 6
    then = app.get('/api/jobs/%d' % group['then']).json
    assert then['input'] == [1, 2, 3] and then['result'] == 6
    assert then['parents'] == group['ids']
    nothen = app.post_json('/api/groups', {'steps': [['echo', 1]]},
                           status=201).json
    assert nothen['then'] is None


@pytest.mark.parametrize('path, data, message', [
    ('/api/jobs', {'task': 'echo', 'after': [999]},
     'after: no job with id 999'),
    ('/api/jobs', {'task': 'echo', 'after': 'x'}, 'after must be'),
    ('/api/groups', {'steps': [], 'then': ['sum', None]},
     'a group needs at least one step'),
    ('/api/chains', {'steps': [['echo', 1], ['echo']]},
     'step 2 of the chain is not a (task, input) pair'),
    ('/api/chains', {'steps': [['echo', 1], 'echo']},
     'step 2 of the chain is not a (task, input) pair'),
    ('/api/chains', {'steps': [['echo', 1], {'task': 'nope'}]},
     "step 2 of the chain: unknown task 'nope'"),
    ('/api/chains', {'steps': [{'task': 'echo', 'what': 1}]},
     'step 1 of the chain: unknown field(s) what'),
    ('/api/chains', {'steps': {'task': 'echo'}}, 'must be an array'),
    ('/api/groups', {'steps': [['echo', 1]], 'then': ['nope', None]},
     "the then of the group: unknown task 'nope'"),
    ('/api/chains', {}, 'missing field(s): steps'),
])
def test_bad_input(app, path, data, message):
    error = app.post_json(path, data, status=400).json['error']
    assert message in error
    assert app.get('/api/counts').json['total'] == 0


def test_openapi_documents_workflows(app):
    doc = app.get('/api/openapi.json').json
    assert 'post' in doc['paths']['/api/chains']
    assert 'post' in doc['paths']['/api/groups']
    assert 'deferred' in doc['components']['schemas']['Status']['enum']
    assert 'after' in doc['components']['schemas']['NewJob']['properties']


# -- XML-RPC ------------------------------------------------------------------

def fault(app, method, *params):
    with pytest.raises(xmlrpc.client.Fault) as info:
        call(app, method, *params)
    return info.value.faultCode, info.value.faultString


def test_xmlrpc(app, db):
    first = call(app, 'add', 'echo', 'x')
    child = call(app, 'add', 'echo', None, False, [first])
    assert call(app, 'getStatus', child) == 'deferred'
    ids = call(app, 'chain', [['echo', [4, 5]], ['sum', None]])
    ids2, then = call(app, 'group', [['echo', 1], {'task': 'echo',
                                                   'input': 2}],
                      ['sum', None])
    runAll(db)
    assert call(app, 'getStatus', child) == 'completed'
    assert call(app, 'getResult', ids[1]) == 9
    assert call(app, 'getResult', then) == 3
    assert fault(app, 'add', 'echo', None, False, [999])[0] == \
        rpc.INVALID_INPUT
    code, message = fault(app, 'chain', [['echo', 1], ['nope', None]])
    assert code == rpc.UNKNOWN_TASK and 'step 2 of the chain' in message
    code, message = fault(app, 'group', [])
    assert 'a group needs at least one step' in message
    code, message = fault(app, 'chain', [['echo', 1], 'echo'])
    assert 'not a (task, input) pair' in message


# -- the command line ---------------------------------------------------------

def test_cli_add_after(tmp_path, capsys):
    # (ZCML registers the tasks again in every test; an --import of a
    # module imported before would not, after the registry's cleanup.)
    db = ['--db', str(tmp_path / 'Data.fs'), '--zcml', EXAMPLES]
    assert run(['add'] + db + ['echo', '1']) == 0
    assert run(['add'] + db + ['echo', '2']) == 0
    capsys.readouterr()
    assert run(['add'] + db + ['echo', '3', '--after', '1', '--after',
                               '2']) == 0
    child = int(capsys.readouterr().out)
    assert run(['status'] + db + [str(child)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info['status'] == 'deferred'
    assert info['parents'] == [1, 2] and info['waiting_for'] == 2
    assert run(['add'] + db + ['echo', '--after', '99']) == 1
    assert 'after: no job with id 99' in capsys.readouterr().err
    assert run(['counts'] + db) == 0
    assert 'deferred     1' in capsys.readouterr().out


# -- the page -----------------------------------------------------------------

def test_page_knows_the_deferred_status_and_links(app):
    script = app.get('/static/app.js').text
    assert "'deferred'" in script and 'renderWorkflow' in script
    page = app.get('/').text
    assert 'id="detail-workflow"' in page and 'name="after"' in page

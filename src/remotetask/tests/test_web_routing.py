"""Routing in the web service: the JSON API's queues, pauses, bulk
actions, job fields and filters; XML-RPC's options struct and methods."""
import xmlrpc.client

import pytest

from remotetask.db import ServiceRunner
from remotetask.tests.webhelpers import call
from remotetask.tests.webhelpers import db, app  # noqa: F401  fixtures
from remotetask.web import xmlrpc as rpc


def fault(app, method, *params):
    with pytest.raises(xmlrpc.client.Fault) as info:
        call(app, method, *params)
    return info.value.faultCode, info.value.faultString


def service(db, func):
    return ServiceRunner(db)(func)


def test_xmlrpc_add_options(app, db):
    plain = call(app, 'add', 'echo', 1)
    later = call(app, 'add', 'echo', 2, True)           # lovely's flag
    routed = call(app, 'add', 'echo', 3, {'queue': 'mail', 'priority': 7,
                                          'unique_key': 'k'})
    assert call(app, 'add', 'echo', 4, {'unique_key': 'k'}) == routed
    delayed = call(app, 'add', 'echo', 5, {'startLater': False,
                                           'delay': 60})
    info = service(db, lambda s: {j: (s.jobs[j].status, s.jobs[j].queue,
                                      s.jobs[j].priority)
                                  for j in (plain, later, routed, delayed)})
    assert info == {plain: ('queued', 'default', 0),
                    later: ('start later', 'default', 0),
                    routed: ('queued', 'mail', 7),
                    delayed: ('delayed', 'default', 0)}
    cron = call(app, 'addCronJob', 'echo', None, [], [], [], [], [], 60,
                '', '', None, {'queue': 'cron', 'priority': 2})
    assert service(db, lambda s: (s.jobs[cron].queue,
                                  s.jobs[cron].priority)) == ('cron', 2)


def test_xmlrpc_bad_options(app, db):
    code, text = fault(app, 'add', 'echo', 1, {'colour': 'red'})
    assert code == rpc.BAD_ARGUMENTS and "unknown options 'colour'" in text
    code, text = fault(app, 'add', 'echo', 1, {'priority': 'high'})
    assert code == rpc.INVALID_INPUT
    assert text == "priority must be an integer, not 'high'"
    code, text = fault(app, 'add', 'echo', 1, {'queue': 5})
    assert 'queue must be a string' in text
    code, text = fault(app, 'add', 'echo', 1, 'mail')
    assert code == rpc.BAD_ARGUMENTS and 'options must be a struct' in text
    code, text = fault(app, 'pause', {'queue': ['a']})
    assert 'queue must be a string' in text
    code, text = fault(app, 'deleteJobs', {'status': 'processing'})
    assert code == rpc.INVALID_STATUS
    assert service(db, lambda s: s.count()) == 0


def test_xmlrpc_queues_pauses_and_bulk(app, db):
    assert call(app, 'pause', {'queue': 'a'}) is True
    assert call(app, 'pause', {'queue': 'a'}) is False
    ids = [call(app, 'add', 'fail', 'boom', {'queue': 'a'})
           for i in range(3)]
    call(app, 'add', 'echo', 1, {'queue': 'b'})
    assert call(app, 'paused') == [{'queue': 'a', 'task': None,
                                    'since': call(app, 'paused')[0]['since']}]
    info = call(app, 'queues')
    assert info['paused_jobs'] == 3
    assert [(q['queue'], q['waiting'], q['paused']) for q in info['queues']
            ] == [('a', 3, True), ('b', 1, False), ('default', 0, False)]
    service(db, lambda s: s.process())
    assert service(db, lambda s: [s.jobs[i].status for i in ids]) == [
        'queued'] * 3
    assert call(app, 'resume') == 1
    service(db, lambda s: s.process())
    assert call(app, 'retryAll', {'queue': 'a', 'dry_run': True}) == 3
    assert call(app, 'retryAll', {'task': 'fail'}) == 3
    assert call(app, 'purge', {'queue': 'a'}) == 3
    assert call(app, 'deleteJobs', {'status': 'cancelled'}) == 3
    assert service(db, lambda s: s.count()) == 1


def failedJobs(db, count, task='fail', queue='default'):
    def make(s):
        ids = [s.add(task, 'boom', queue=queue, now=0) for i in range(count)]
        for jobid in ids:
            s.processNext(jobid=jobid, now=1)
        return ids
    return service(db, make)


def test_json_bulk_in_bounded_steps(app, db):
    failedJobs(db, 35)
    first = app.post_json('/api/bulk/retry', {'limit': 10}).json
    assert (first['count'], first['more']) == (10, True)
    assert service(db, lambda s: s.count('error')) == 25
    counts, cursor = [first['count']], first['cursor']
    while True:
        answer = app.post_json('/api/bulk/retry', {
            'limit': 10, 'cursor': cursor, 'dry_run': False}).json
        counts.append(answer['count'])
        cursor = answer['cursor']
        if not answer['more']:
            break
    assert counts == [10, 10, 10, 5]
    # Purge, the dry run first (as the page does).
    dry = app.post_json('/api/bulk/purge', {'dry_run': True}).json
    assert (dry['count'], dry['more']) == (35, False)
    answer = app.post_json('/api/bulk/purge', {'task': 'fail'}).json
    assert (answer['count'], answer['more']) == (35, False)  # limit 1000
    answer = app.post_json('/api/bulk/delete', {'status': 'cancelled',
                                                'limit': 20}).json
    assert (answer['count'], answer['more']) == (20, True)
    answer = app.post_json('/api/bulk/delete', {
        'status': 'cancelled', 'limit': 20, 'cursor': answer['cursor']}).json
    assert (answer['count'], answer['more']) == (15, False)
    assert service(db, lambda s: s.count()) == 0


@pytest.mark.parametrize('body, message', [
    ({'limit': 0}, 'limit must be an integer from 1 to 10000'),
    ({'limit': 10001}, 'limit must be an integer from 1 to 10000'),
    ({'limit': '5'}, "limit must be an integer from 1 to 10000 (jobs per step), not '5'"),
    ({'limit': 1.5}, 'limit must be an integer'),
    ({'cursor': 'next'}, 'cursor must be the cursor of the previous step'),
    ({'cursor': {'queued': 1}}, "'queued' is not a status of this action"),
])
def test_json_bulk_bad_steps(app, db, body, message):
    failedJobs(db, 2)
    error = app.post_json('/api/bulk/retry', body, status=400).json['error']
    assert message in error
    assert service(db, lambda s: s.count('error')) == 2


def test_xmlrpc_bulk_runs_steps_of_their_own(app, db, monkeypatch):
    from remotetask import bulk
    failedJobs(db, 35)
    monkeypatch.setattr(bulk, 'BATCH', 10)
    commits = []
    real = ServiceRunner.__call__

    def counted(self, func, *args, **kw):
        result = real(self, func, *args, **kw)
        commits.append(result.count)
        return result
    monkeypatch.setattr(ServiceRunner, '__call__', counted)
    assert call(app, 'retryAll', {'dry_run': True, 'task': 'fail'}) == 35
    del commits[:]
    # 'limit': at most that many, in steps of at most 10.
    assert call(app, 'retryAll', {'limit': 12}) == 12
    assert commits == [10, 2]
    del commits[:]
    assert call(app, 'retryAll', {}) == 23
    assert commits == [10, 10, 3]
    monkeypatch.setattr(ServiceRunner, '__call__', real)
    assert service(db, lambda s: s.count('error')) == 0
    code, text = fault(app, 'purge', {'limit': 0})
    assert code == rpc.INVALID_INPUT and 'limit must be an integer >= 1' \
        in text
    code, text = fault(app, 'purge', {'limit': 'all'})
    assert code == rpc.INVALID_INPUT
    assert call(app, 'purge', {'limit': 100}) == 35
    assert call(app, 'deleteJobs', {'status': 'cancelled'}) == 35


def test_json_routing_fields_and_filters(app, db):
    r = app.post_json('/api/jobs', {'task': 'echo', 'queue': 'x',
                                    'priority': -3}, status=201).json
    assert (r['queue'], r['priority']) == ('x', -3)
    app.post_json('/api/jobs', {'task': 'echo', 'queue': 'x'}, status=201)
    app.post_json('/api/jobs', {'task': 'echo'}, status=201)
    page = app.get('/api/jobs?queue=x&priority=-3').json
    assert [j['id'] for j in page['jobs']] == [r['id']]
    assert page['total'] is None and page['scanned'] == 3
    assert len(app.get('/api/jobs?queue=x').json['jobs']) == 2
    assert app.get('/api/jobs?priority=x', status=400).json['error'] == (
        "priority must be an integer between -1000 and 1000, not 'x'")
    cron = app.post_json('/api/cronjobs', {'task': 'echo', 'delay': 60,
                                           'queue': 'c', 'priority': 1},
                         status=201).json
    assert (cron['queue'], cron['priority']) == ('c', 1)
    error = app.post_json('/api/jobs', {'task': 'echo', 'queue': ''},
                          status=400).json['error']
    assert error.startswith('queue must be a non-blank printable name')
    counts = app.get('/api/counts').json
    assert counts['paused'] == 0
    app.post_json('/api/pause', {'task': 'echo'})
    assert app.get('/api/counts').json['paused'] == 4

"""GET /api/stats, the job URLs and the statistics of /metrics, through the
real app (webtest) on a database whose jobs ran."""
import time

from prometheus_client.parser import text_string_to_metric_families

from remotetask.tests.webhelpers import call, runAll
from remotetask.tests.webhelpers import db, app  # noqa: F401  fixtures


def test_stats_table_counts_the_runs(app, db):
    for i in range(3):
        call(app, 'add', 'sum', [i, 1])
    failing = call(app, 'add', 'fail', 'boom')
    runAll(db)
    call(app, 'add', 'sum', [5])          # waits: nothing runs it
    data = app.get('/api/stats').json
    table = {row['task']: row for row in data['tasks']}
    assert (table['sum']['runs'], table['sum']['completed'],
            table['sum']['failed'], table['sum']['waiting']) == (3, 3, 0, 1)
    assert table['sum']['failure_rate'] == 0
    assert table['sum']['p50'] is not None
    fail = table['fail']
    assert (fail['runs'], fail['failed'], fail['failure_rate']) == (1, 1, 1)
    assert fail['last_failure']['job'] == failing
    assert data['waiting'] == 1
    minutes = data['minutes']
    assert len(minutes['time']) == 60 and minutes['step'] == 60
    assert sum(minutes['completed']) == 3 and sum(minutes['failed']) == 1
    assert len(data['hours']['time']) == 24
    assert sum(data['hours']['completed']) == 3
    assert set(minutes['runtime']) == {'sum', 'fail'}


def test_stats_is_read_only_for_viewers_too(app):
    response = app.post('/api/stats', status=405)
    assert response.headers['Allow'] == 'GET, HEAD'


def test_a_job_url_opens_the_page_on_its_detail(app):
    response = app.get('/jobs/42', status=302)
    assert response.location.endswith('/#/jobs/42')
    app.get('/jobs/x', status=404)


def test_metrics_from_the_statistics(app, db):
    call(app, 'add', 'sum', [1, 2])
    call(app, 'add', 'fail', 'x')
    runAll(db)
    call(app, 'add', 'sum', [3])
    families = {f.name: f for f in text_string_to_metric_families(
        app.get('/metrics').text)}
    runtime = families['remotetask_task_run_seconds']
    assert runtime.type == 'histogram'
    counts = {(s.labels['task'], s.labels.get('le')): s.value
              for s in runtime.samples if s.name.endswith('_bucket')}
    assert counts[('sum', '+Inf')] == 1 and counts[('fail', '+Inf')] == 1
    # cumulative, one bucket per bound
    sums = [v for (task, le), v in counts.items() if task == 'sum']
    assert sums == sorted(sums)
    runs = {(s.labels['task'], s.labels['outcome']): s.value
            for s in families['remotetask_task_runs'].samples}
    assert runs[('sum', 'completed')] == 1 and runs[('fail', 'failed')] == 1
    assert families['remotetask_task_runs'].type == 'counter'
    waiting = {s.labels['queue']: s.value
               for s in families['remotetask_queue_jobs_waiting'].samples}
    assert waiting == {'default': 1}
    ages = families['remotetask_queue_oldest_waiting_age_seconds'].samples
    assert ages[0].labels == {'queue': 'default'} and ages[0].value >= 0
    byTask = {s.labels['task']: s.value
              for s in families['remotetask_task_jobs_waiting'].samples}
    assert byTask == {'sum': 1, 'fail': 0}
    # no processor has registered in this database
    assert families['remotetask_workers_live'].samples[0].value == 0


def test_metrics_count_the_live_workers(db):
    from remotetask.processor import Processor
    from remotetask.tests.webhelpers import webApp
    app = webApp(db)
    call(app, 'add', 'sum', [1])        # makes the service
    processor = Processor(db, concurrency=1, heartbeat=0.5)
    processor.start()
    try:
        app = webApp(db, processor=processor)
        families = {}
        for _ in range(100):
            families = {f.name: f for f in text_string_to_metric_families(
                app.get('/metrics').text)}
            if families['remotetask_workers_live'].samples[0].value == 1:
                break
            time.sleep(0.1)
        assert families['remotetask_workers_live'].samples[0].value == 1
        [running] = families['remotetask_worker_jobs_running'].samples
        assert running.value == 0 and running.labels['worker']
        [age] = families['remotetask_worker_heartbeat_age_seconds'].samples
        assert age.value >= 0
    finally:
        processor.stop(timeout=30)


def test_grafana_dashboard_uses_only_metrics_that_exist(db):
    import json
    import os
    import re

    from remotetask.processor import Processor
    from remotetask.tests.webhelpers import webApp
    path = os.path.join(os.path.dirname(__file__), '..', '..', '..', 'docs',
                        'grafana-dashboard.json')
    with open(path) as f:
        dashboard = json.load(f)
    exprs = [target['expr'] for panel in dashboard['panels']
             for target in panel['targets']]
    exprs.append(dashboard['templating']['list'][0]['definition'])
    app = webApp(db, processor=Processor(db))
    call(app, 'add', 'sum', [1, 2])
    runAll(db)
    text = app.get('/metrics').text
    # the samples' names, and the families' (one without samples: no
    # worker is live)
    exported = set(re.findall(r'^(remotetask_\w+?)(?:\{| )', text, re.M)) \
        | set(re.findall(r'^# TYPE (remotetask_\w+) ', text, re.M))
    used = {name for expr in exprs
            for name in re.findall(r'remotetask_\w+', expr)}
    assert used and used <= exported, used - exported
    # The per-task histogram the dashboard's quantiles read
    assert 'remotetask_task_run_seconds_bucket' in used

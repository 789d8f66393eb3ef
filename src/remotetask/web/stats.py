"""``GET /api/stats``: the statistics of the runs (``remotetask.stats``):
the per-task table of the last 24 hours and the series of the charts of
the management page; and ``/jobs/ID``, a job's own URL (the page, open
on the job's detail: ``/#/jobs/ID``).
"""
import time

from prometheus_client.core import (
    CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily)
from pyramid.httpexceptions import HTTPFound

from remotetask import routing, stats
from remotetask.web.auth import VIEW


def includeme(config):
    config.add_route('api_stats', '/api/stats')
    config.add_view(showStats, route_name='api_stats', request_method='GET',
                    renderer='json', permission=VIEW)
    config.add_route('job_page', '/jobs/{id:\\d{1,18}}')
    config.add_view(jobPage, route_name='job_page', request_method='GET',
                    permission=VIEW)


def showStats(request):
    return stats.summary(request.service)


def jobPage(request):
    return HTTPFound(location=request.route_url('index')
                     + '#/jobs/%d' % int(request.matchdict['id']))


def metricFamilies(service, now=None):
    """The families of /metrics read from the statistics and the queues
    of the database (whichever process ran the jobs):

    - ``remotetask_task_run_seconds{task}``: histogram of the run times
      since the statistics began (completed, failed and retried runs);
    - ``remotetask_task_runs_total{task,outcome}``: runs that ended, by
      outcome (completed, failed, retried, cancelled);
    - ``remotetask_queue_jobs_waiting{queue}``: jobs waiting per queue
      (queued, delayed and cron jobs);
    - ``remotetask_queue_oldest_waiting_age_seconds{queue}``: how long the
      job of the queue due first has been due (0: none is due);
    - ``remotetask_task_jobs_waiting{task}``: jobs queued or delayed per
      task;
    - ``remotetask_workers_live``: the live workers of the worker registry
      (``remotetask.registry``), and per live worker
      ``remotetask_worker_jobs_running{worker}`` and
      ``remotetask_worker_heartbeat_age_seconds{worker}``.
    """
    now = time.time() if now is None else now
    runtime = HistogramMetricFamily(
        'remotetask_task_run_seconds',
        'Run time of the runs that ended (completed, failed, retried), in '
        'the whole service since its statistics began', labels=['task'])
    runs = CounterMetricFamily(
        'remotetask_task_runs',
        'Runs that ended in the whole service, by outcome (completed, '
        'failed, retried, cancelled)', labels=['task', 'outcome'])
    for task, entry in sorted(stats.totals(service).items()):
        bins = entry.get('bins', {})
        runtime.add_metric(
            [task], [(_le(bound), n)
                     for bound, n in stats.cumulative(bins)],
            sum_value=entry.get('seconds', 0))
        for outcome in stats.COUNTED:
            runs.add_metric([task, outcome], entry.get(outcome, 0))
    waiting = GaugeMetricFamily(
        'remotetask_queue_jobs_waiting',
        'Jobs waiting per queue (queued, delayed and cron jobs)',
        labels=['queue'])
    oldest = GaugeMetricFamily(
        'remotetask_queue_oldest_waiting_age_seconds',
        'Seconds since the job of the queue due first became due (0: none '
        'is due)', labels=['queue'])
    for info in routing.queues(service, now):
        waiting.add_metric([info['queue']], info['waiting'])
        oldest.add_metric([info['queue']], info['oldest_age'] or 0.0)
    byTask = GaugeMetricFamily(
        'remotetask_task_jobs_waiting', 'Jobs queued or delayed per task',
        labels=['task'])
    names = service.taskNames()
    for task, n in sorted(stats.waitingByTask(service, names).items()):
        byTask.add_metric([task], n)
    return [runtime, runs, waiting, oldest, byTask] + workerFamilies(
        service, now)


def workerFamilies(service, now):
    from remotetask import registry
    found = registry.entries(service, now)
    live = GaugeMetricFamily(
        'remotetask_workers_live',
        'Live workers (processors whose heartbeat in the worker registry '
        'has not expired)', value=len(found))
    running = GaugeMetricFamily(
        'remotetask_worker_jobs_running', 'Jobs a live worker runs now',
        labels=['worker'])
    age = GaugeMetricFamily(
        'remotetask_worker_heartbeat_age_seconds',
        'Seconds since the last heartbeat of a live worker',
        labels=['worker'])
    for entry in found:
        running.add_metric([entry.id], len(entry.running))
        age.add_metric([entry.id], max(0.0, now - entry.heartbeat))
    return [live, running, age]


def _le(bound):
    return '+Inf' if bound == float('inf') else repr(float(bound))


_NUMBERS = {'type': 'array', 'items': {'type': 'number', 'nullable': True}}

SCHEMAS = {
    'TaskStats': {'type': 'object', 'properties': {
        'task': {'type': 'string'},
        'runs': {'type': 'integer', 'description':
                 'Runs that ended: completed + failed + retried'},
        'completed': {'type': 'integer'},
        'failed': {'type': 'integer', 'description':
                   'Runs that ended the job in error'},
        'retried': {'type': 'integer', 'description':
                    'Runs that failed and queued the job again'},
        'cancelled': {'type': 'integer', 'description':
                      'Runs cancelled while running'},
        'failure_rate': {'type': 'number', 'nullable': True, 'description':
                         'failed / (completed + failed)'},
        'mean': {'type': 'number', 'nullable': True},
        'p50': {'type': 'number', 'nullable': True,
                'description': 'Median run time (seconds)'},
        'p95': {'type': 'number', 'nullable': True},
        'last_failure': {'type': 'object', 'nullable': True, 'properties': {
            'at': {'type': 'number'}, 'job': {'type': 'integer'},
            'error': {'type': 'string'}}},
        'waiting': {'type': 'integer',
                    'description': 'Jobs queued or delayed now'}}},
    'StatsSeries': {'type': 'object', 'properties': {
        'step': {'type': 'integer', 'description': 'Seconds per period'},
        'time': {'type': 'array', 'items': {'type': 'number'},
                 'description': 'Start of each period (epoch seconds)'},
        'completed': {'type': 'array', 'items': {'type': 'integer'}},
        'failed': {'type': 'array', 'items': {'type': 'integer'}},
        'retried': {'type': 'array', 'items': {'type': 'integer'}},
        'waiting': dict(_NUMBERS, description=(
            'Jobs waiting as seen by the last run that ended in the '
            'period (null: no run ended)')),
        'runtime': {'type': 'object', 'description':
                    'Per task: p50 and p95 of the run time per period',
                    'additionalProperties': {'type': 'object', 'properties': {
                        'p50': _NUMBERS, 'p95': _NUMBERS}}}}},
    'Stats': {'type': 'object', 'properties': {
        'now': {'type': 'number'},
        'window': {'type': 'integer',
                   'description': 'Seconds the task table counts (a day)'},
        'since': {'type': 'number', 'nullable': True,
                  'description': 'When the statistics began'},
        'waiting': {'type': 'integer'},
        'tasks': {'type': 'array', 'items': {
            '$ref': '#/components/schemas/TaskStats'}},
        'minutes': {'$ref': '#/components/schemas/StatsSeries'},
        'hours': {'$ref': '#/components/schemas/StatsSeries'}}},
}


def openapiPaths(op, json, ref):
    """The paths of ``/api/openapi.json`` (``op``, ``json`` and ``ref`` are
    ``openapi``'s helpers)."""
    return {'/api/stats': {'get': op(
        'Statistics of the runs: per task over the last 24 hours (runs, '
        'failures, failure rate, p50/p95 run time, last failure, waiting '
        'jobs), and per minute over the last hour and per hour over the '
        'last day (completed, failed, retried, waiting, run time p50/p95 '
        'per task)', json(ref('Stats')), tag='service')}}

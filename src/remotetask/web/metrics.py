"""/metrics in the Prometheus text format (written by prometheus_client).

Two kinds of numbers:

- read from the database at each scrape, so they hold for the whole
  service, whichever process ran the jobs: ``remotetask_jobs`` by status
  (the service's O(1) counters), ``remotetask_queue_oldest_age_seconds``,
  how long the job due first has been due (0 when none is due), and
  ``remotetask_jobs_removed_total`` by reason (retention, clean, delete);
  from the statistics kept in the database (``remotetask.stats``), the
  histogram ``remotetask_task_run_seconds`` and the counter
  ``remotetask_task_runs_total`` per task, and the waiting jobs per queue
  and per task, with the oldest waiting age per queue (see
  ``remotetask.web.stats.metricFamilies``);
- counted in this process, like any Prometheus counter (they start at 0
  when the process starts; scrape every process that runs jobs):
  ``remotetask_jobs_processed_total`` and ``remotetask_jobs_failed_total``
  per task and the histogram ``remotetask_job_run_seconds`` per task;
  with a processor, also its own counters
  (``remotetask_processor_events_total{event}``: claimed, completed,
  failed, retried, lost, conflicts...) and running jobs.

Why counted from events rather than from the jobs' attempt history:
reading the history of every finished job at each scrape would load all
jobs (and cleaned jobs would vanish from it).  A ``JobStarted`` subscriber
notes a monotonic clock per thread; ``JobCompleted``, ``JobFailed`` and
``JobRetried`` subscribers compute the run time and record it only when the
job's transaction commits (an after-commit hook on the job's connection),
so a run that is retried after a conflict is counted once.
"""
import threading
import time

import zope.component
import zope.component.event  # noqa: F401  zope.event -> component handlers
from prometheus_client import (
    CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram,
    generate_latest)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from pyramid.response import Response

import transaction
from remotetask import interfaces
from remotetask.web.auth import VIEW

BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600,
           float('inf'))


class Recorder:
    """Counters and the run-time histogram of the runs of this process."""

    def __init__(self):
        self.registry = CollectorRegistry(auto_describe=True)
        self.processed = Counter(
            'remotetask_jobs_processed',
            'Job runs that ended in this process (completed, failed or '
            'retried)', ['task', 'outcome'], registry=self.registry)
        self.failed = Counter(
            'remotetask_jobs_failed',
            'Job runs in this process that ended the job in error',
            ['task'], registry=self.registry)
        self.runtime = Histogram(
            'remotetask_job_run_seconds',
            'Run time of the job runs that ended in this process',
            ['task'], buckets=BUCKETS, registry=self.registry)
        self._started = threading.local()

    def started(self, event):
        self._started.value = (event.job.id, time.monotonic())

    def ended(self, event, outcome):
        job = event.job
        started = getattr(self._started, 'value', None)
        if started is not None and started[0] == job.id:
            seconds = time.monotonic() - started[1]
        else:
            attempt = job.attempts[-1] if job.attempts else {}
            seconds = (attempt.get('end') or 0) - (attempt.get('start') or 0)
        task = job.task
        jar = getattr(job, '_p_jar', None)
        manager = jar.transaction_manager if jar is not None \
            else transaction.manager

        def record(committed):
            if committed:
                self.record(task, outcome, max(0.0, seconds))
        manager.get().addAfterCommitHook(record)

    def record(self, task, outcome, seconds):
        self.processed.labels(task, outcome).inc()
        if outcome == 'error':
            self.failed.labels(task).inc()
        self.runtime.labels(task).observe(seconds)

    def completed(self, event):
        self.ended(event, 'completed')

    def failed_(self, event):
        self.ended(event, 'error')

    def retried(self, event):
        self.ended(event, 'retry')

    def subscribe(self):
        """Register the event handlers in the global registry (once)."""
        registered = {h.handler for h in
                      zope.component.getGlobalSiteManager()
                      .registeredHandlers()}
        for handler, iface in ((self.started, interfaces.IJobStarted),
                               (self.completed, interfaces.IJobCompleted),
                               (self.failed_, interfaces.IJobFailed),
                               (self.retried, interfaces.IJobRetried)):
            if handler not in registered:
                zope.component.provideHandler(handler, [iface])


RECORDER = Recorder()


def includeme(config):
    RECORDER.subscribe()
    config.add_route('metrics', '/metrics')
    config.add_view(metrics, route_name='metrics', request_method='GET',
                    permission=VIEW)


class _Families:
    def __init__(self, families):
        self.families = families

    def collect(self):
        return iter(self.families)


def serviceFamilies(service, processor=None, now=None):
    """The metric families read from the service (and the processor)."""
    now = time.time() if now is None else now
    jobs = GaugeMetricFamily('remotetask_jobs', 'Jobs by status',
                             labels=['status'])
    for status, n in service.counts().items():
        jobs.add_metric([status], n)
    oldest = service.oldestWaiting()
    age = 0.0 if oldest is None else max(0.0, now - oldest[0])
    families = [jobs, GaugeMetricFamily(
        'remotetask_queue_oldest_age_seconds',
        'Seconds since the job due first became due (0: none is due)',
        value=age)]
    families.append(removedFamily(service))
    # Statistics, waiting jobs per queue and task (remotetask.web.stats).
    from remotetask.web import stats
    families.extend(stats.metricFamilies(service, now))
    from remotetask.health import STATE
    families.append(GaugeMetricFamily(
        'remotetask_storage_disk_full',
        '1 from a commit that failed for a full disk (ENOSPC) until a '
        'commit works again, as this process saw it',
        value=1 if STATE.full else 0))
    if processor is not None:
        families.append(GaugeMetricFamily(
            'remotetask_processor_running',
            '1 while this process processes jobs',
            value=1 if processor.running else 0))
        stats = dict(getattr(processor, 'stats', None) or {})
        families.append(GaugeMetricFamily(
            'remotetask_processor_jobs_running',
            'Jobs the processor of this process is running now',
            value=stats.pop('running', 0)))
        events = CounterMetricFamily(
            'remotetask_processor_events',
            'What the processor of this process counted since it was made '
            '(claimed, completed, failed, retried, lost, conflicts...)',
            labels=['event'])
        for name, value in sorted(stats.items()):
            if isinstance(value, (int, float)):
                events.add_metric([name], value)
        families.append(events)
    return families


def removedFamily(service):
    """Jobs removed from the service since it was made, by reason
    (retention, clean, delete): read from the database, like the counts."""
    from remotetask import retention
    removed = CounterMetricFamily(
        'remotetask_jobs_removed',
        'Jobs removed from the service (by retention, clean or delete)',
        labels=['reason'])
    for reason, n in sorted(retention.removedCounts(service).items()):
        removed.add_metric([reason], n)
    return removed


def render(service, processor=None, recorder=RECORDER, now=None):
    """The text of a scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(serviceFamilies(service, processor, now)
                                + list(recorder.registry.collect())))
    return generate_latest(registry)


def metrics(request):
    body = render(request.service, request.registry.remotetask.processor)
    return Response(body=body, content_type=CONTENT_TYPE_LATEST.split(';')[0],
                    charset='utf-8')

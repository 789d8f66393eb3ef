"""Many producers, many workers, over ZEO and RelStorage; and outages.

4 producer processes add jobs (one per transaction, retried by
``remotetask.retry.attempts``) while 4 ``remotetask worker`` processes run
them.  Every job must run, none be claimed twice, no ConflictError
may reach a producer, and the retry rate is reported (printed, and recorded
as test properties).  The fault tests stop the database server for 10 s in
the middle of the run: nothing may be lost or left 'processing'.

No assertion depends on timing: the tests poll with generous deadlines.
"""
import ast
import collections
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import transaction

from remotetask import db as dbmod
from remotetask import testing
from remotetask.interfaces import COMPLETED, DELAYED, PROCESSING, QUEUED

PRODUCERS = 4
WORKERS = 4
JOBS_EACH = 60          # 240 jobs per run
DEADLINE = 150.0        # seconds; generous, never a speed assertion


def _agent(*args):
    return [sys.executable, '-m', 'remotetask.tests.scale_agents'] + [
        str(a) for a in args]


class Run:
    """Producer and worker processes on one database."""

    def __init__(self, uri, tmp_path, jobs_each=JOBS_EACH):
        self.uri = uri
        self.dir = tmp_path
        self.jobs_each = jobs_each
        self.log = str(tmp_path / 'executions.log')
        self.env = testing.subprocessEnv(REMOTETASK_SCALE_LOG=self.log)
        self.producers = []
        self.workers = []

    def start(self):
        database = dbmod.openDB(self.uri)
        try:
            dbmod.ensureService(database)
        finally:
            database.close()
        for i in range(WORKERS):
            self.workers.append(self._worker(i))
        for i in range(PRODUCERS):
            self.producers.append(self._spawn(
                'produce', self.uri, self.jobs_each, 'p%d' % i,
                self.dir / ('p%d.json' % i)))

    def _worker(self, i):
        out = open(str(self.dir / ('worker-%d.out' % i)), 'wb')
        try:
            return subprocess.Popen(testing.remotetaskCommand(
                'worker', '--db', self.uri, '--import',
                'remotetask.tests.scale_agents', '--concurrency', 1,
                '--lease', 2,
                '--maintenance-interval', 1, '--grace', 5, '--worker-id',
                'w%d' % i), env=self.env, stdout=out,
                stderr=subprocess.STDOUT)
        finally:
            out.close()

    def _spawn(self, *args):
        out = open(str(self.dir / ('%s-%d.out' % (args[0], len(
            self.producers) + len(self.workers)))), 'wb')
        try:
            return subprocess.Popen(_agent(*args), env=self.env, stdout=out,
                                    stderr=subprocess.STDOUT)
        finally:
            out.close()

    def waitProducers(self):
        for proc in self.producers:
            proc.wait(DEADLINE)
        return [p.returncode for p in self.producers]

    def stopWorkers(self):
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.workers:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def kill(self):
        for proc in self.producers + self.workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def stats(self, kind):
        if kind == 'w':
            return [self.workerStats(i) for i in range(WORKERS)]
        found = []
        for i in range(PRODUCERS):
            path = self.dir / ('%s%d.json' % (kind, i))
            with open(str(path)) as f:
                found.append(json.load(f))
        return found

    def workerStats(self, i):
        """The Processor's stats, from the worker's last log line about
        them ("processor ... stopped; {...}")."""
        text = (self.dir / ('worker-%d.out' % i)).read_text()
        found = re.findall(r'processor \S+ stopped; (\{.*\})', text)
        assert found, 'worker %d logged no stats:\n%s' % (i, text[-2000:])
        return ast.literal_eval(found[-1])

    def executions(self):
        if not os.path.exists(self.log):
            return collections.Counter()
        with open(self.log) as f:
            return collections.Counter(int(line.split()[0]) for line in f)

    def output(self):
        text = []
        for path in sorted(self.dir.glob('*.out')):
            text.append('== %s\n%s' % (path.name, path.read_text()[-3000:]))
        return '\n'.join(text)


#: The error texts of the jobs not completed, at the last snapshot.
errors = {}


def snapshot(uri):
    """(counts, {jobid: (status, input, number of claims)}): attempts that
    ended in a retry (a job that kept conflicting is queued again with
    back-off, as one of its retries) are not counted as extra claims."""
    database = dbmod.openDB(uri)
    try:
        tm = transaction.TransactionManager()
        conn = database.open(tm)
        try:
            service = dbmod.getService(conn)
            jobs = {jobid: (job.status, job.input,
                            # Runs that counted: a retried conflict or a
                            # claimed-ahead job handed back unstarted is not
                            # a second claim of the job.
                            sum(1 for attempt in job.attempts
                                if attempt.get('outcome') not in
                                ('retry', 'handed back')))
                    for jobid, job in service.jobs.items()}
            errors.clear()
            errors.update({jobid: job.error for jobid, job in
                           service.jobs.items() if job.status != COMPLETED})
            return service.counts(), jobs
        finally:
            tm.abort()
            conn.close()
    finally:
        database.close()


def waitUntil(predicate, what, timeout=DEADLINE, pause=0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError('timed out after %ss waiting for %s'
                                 % (timeout, what))
        time.sleep(pause)


def allDone(uri, total, last=None):
    """All jobs added and none waiting or processing any more."""
    def check():
        counts, jobs = snapshot(uri)
        if last is not None:
            last[:] = [counts]
        if len(jobs) >= total and not any(
                counts[s] for s in (QUEUED, DELAYED, PROCESSING)):
            return counts, jobs
        return None
    return check


def report(record_property, label, run):
    """Retry rates of producers and workers: printed and recorded."""
    producers = run.stats('p')
    workers = run.stats('w')
    ptx = sum(s.get('transactions', 0) for s in producers)
    pconf = sum(s.get('conflicts', 0) for s in producers)
    outages = sum(s.get('outages', 0) for s in producers)
    wclaims = sum(s.get('claimed', 0) for s in workers)
    wproc = sum(s.get('processed', 0) for s in workers)
    wconf = sum(s.get('conflicts', 0) for s in workers)
    wstorage = sum(s.get('storage_errors', 0) for s in workers)
    figures = {
        'producer_transactions': ptx, 'producer_conflict_retries': pconf,
        'producer_retry_rate': round(pconf / max(1, ptx), 4),
        'producer_outage_retries': outages,
        'worker_claims': wclaims, 'worker_processed': wproc,
        'worker_conflict_retries': wconf,
        'worker_retry_rate': round(wconf / max(1, wclaims + wproc), 4),
        'worker_storage_errors': wstorage,
    }
    for key, value in figures.items():
        record_property('%s_%s' % (label, key), value)
    print('\n[scale %s] %s' % (label, json.dumps(figures, sort_keys=True)))
    return figures


def checkProducers(run):
    """Every producer added all its jobs; no error reached it."""
    for stats in run.stats('p'):
        assert 'error' not in stats, stats['error']
        assert stats['added'] == run.jobs_each


def checkRun(run, total, jobs, once=True):
    """Every intended job exists, completed; with ``once``, each claimed
    once and its input added once."""
    inputs = collections.Counter(inp for status, inp, n in jobs.values())
    expected = {'p%d-%d' % (p, i) for p in range(PRODUCERS)
                for i in range(run.jobs_each)}
    assert expected <= set(inputs), 'lost jobs: %s' % sorted(
        expected - set(inputs))[:10]
    statuses = collections.Counter(status for status, inp, n in
                                   jobs.values())
    assert statuses == {COMPLETED: len(jobs)}, (statuses, list(
        errors.items())[:5])
    executions = run.executions()
    assert set(executions) == set(jobs), 'jobs that never ran: %s' % sorted(
        set(jobs) - set(executions))[:10]
    if once:
        assert len(jobs) == total, 'jobs added twice: %s' % [
            i for i, n in inputs.items() if n > 1][:10]
        assert all(n == 1 for status, inp, n in jobs.values()), \
            'jobs claimed more than once: %s' % [
                j for j, (s, i, n) in jobs.items() if n > 1][:10]
    return executions


def concurrent(uri, tmp_path, record_property, label):
    run = Run(uri, tmp_path)
    total = PRODUCERS * run.jobs_each
    try:
        run.start()
        assert run.waitProducers() == [0] * PRODUCERS, run.output()
        counts, jobs = waitUntil(allDone(uri, total), 'all jobs completed')
    finally:
        run.stopWorkers()
        run.kill()
    checkProducers(run)
    executions = checkRun(run, total, jobs)
    figures = report(record_property, label, run)
    # A job runs again only when its run transaction was retried after a
    # conflict: the re-runs are bounded by the workers' conflict retries.
    reruns = sum(n - 1 for n in executions.values())
    assert reruns <= figures['worker_conflict_retries']
    assert figures['worker_processed'] == total
    # Producers add in lanes of their own: at most 1 % of their
    # transactions retried (issue 18; 20-50 % before lanes).
    assert figures['producer_conflict_retries'] * 100 <= \
        figures['producer_transactions'], figures


@pytest.mark.zeo
@pytest.mark.slow
def test_concurrent_producers_and_workers_over_zeo(tmp_path,
                                                   record_property):
    with testing.ZEOServer(str(tmp_path / 'zeo.fs')) as server:
        concurrent(server.uri, tmp_path, record_property, 'zeo')


@pytest.mark.postgres
@pytest.mark.slow
def test_concurrent_producers_and_workers_over_relstorage(
        postgres, tmp_path, record_property):
    concurrent(postgres.uri, tmp_path, record_property, 'relstorage')


# -- Outages --------------------------------------------------------------------

OUTAGE = 10.0


def outage(uri, tmp_path, record_property, label, server):
    """Stop ``server`` for OUTAGE seconds once work is under way."""
    run = Run(uri, tmp_path, jobs_each=50)
    total = PRODUCERS * run.jobs_each
    try:
        run.start()
        waitUntil(lambda: sum(run.executions().values()) >= 40,
                  'the first jobs to run')
        server.stop()
        time.sleep(OUTAGE)
        server.start()
        assert run.waitProducers() == [0] * PRODUCERS, run.output()
        last = []
        try:
            counts, jobs = waitUntil(allDone(uri, total, last),
                                     'all jobs completed after the outage')
        except AssertionError as e:
            raise AssertionError('%s; last counts %s\n%s' % (
                e, last, run.output()))
    finally:
        run.stopWorkers()
        run.kill()
    checkProducers(run)
    # A commit cut off in its second phase may have been stored: then the
    # producer's retry adds the job again, or a worker runs a job again.
    # Nothing may be lost or stuck.
    checkRun(run, total, jobs, once=False)
    figures = report(record_property, label, run)
    figures['jobs'] = len(jobs)
    print('[scale %s] %d jobs for %d adds' % (label, len(jobs), total))
    assert counts[PROCESSING] == 0


@pytest.mark.zeo
@pytest.mark.slow
def test_zeo_server_down_for_10s(tmp_path, record_property):
    server = testing.ZEOServer(str(tmp_path / 'zeo.fs')).start()
    try:
        outage(server.uri, tmp_path, record_property, 'zeo-outage', server)
    finally:
        server.stop()


def _processorRidesOutPostgresOutages():
    """Whether the Processor takes the PostgreSQL driver's connection
    errors (RelStorage passes them on) for an outage to wait out.  If not,
    a job that was running when the server went down ends in 'error'
    ("the run failed outside the task"): a known bug of the processor,
    seen when the outage hits a job's run transaction (not every time, so
    the xfail is not strict)."""
    try:
        import psycopg2
        from remotetask import processor
    except ImportError:
        return True
    return issubclass(psycopg2.OperationalError, processor.storageErrors())


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.xfail(not _processorRidesOutPostgresOutages(), strict=False,
                   reason='Processor.storageErrors() lacks psycopg2 '
                   'OperationalError/InterfaceError: jobs running when '
                   'PostgreSQL goes down end in error (reported to the lead)')
def test_postgres_down_for_10s(tmp_path, record_property):
    try:
        cluster = testing.ThrowawayPostgres().start()
    except Exception as e:  # pragma: no cover - depends on the machine
        pytest.skip('can not start a throwaway PostgreSQL cluster: %s' % e)
    try:
        with cluster.database() as database:
            outage(database.uri, tmp_path, record_property,
                   'relstorage-outage', cluster)
    finally:
        cluster.destroy()

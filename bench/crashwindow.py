"""The crash window of grouped commits, measured (issue 17, item 6).

    python bench/crashwindow.py [--runs 5] [--jobs 300] [--seconds 0.02]
                                [--workers 3] [--threads 2] [--lease 3]
                                [--write]

A ZEO server (runzeo on 127.0.0.1, a FileStorage) serves a fresh service
per run.  ``--jobs`` jobs of a ``--seconds`` task are added, then
``--workers`` processes ``remotetask worker --concurrency THREADS --lease
LEASE`` (default ``--batch auto``) drain them.  Every run of the task
appends ``start JOBID PID`` and ``end JOBID PID`` to a file opened
O_APPEND, outside the ZODB, so runs the ZODB rolled back are counted too
(``remotetask.tests.uptimetasks``: ``grouped`` has the default policy,
``sendmail`` is ``grouped=False``).  Once a quarter of the jobs are done
and the first worker has ended some, that worker is stopped (SIGSTOP) at a
random moment, the jobs it had started and not committed are noted (its
*open window*), and it is killed (SIGKILL).  The others finish; the
killed worker's jobs come back when their lease expires.

Then, per run: the jobs that ran more than once, split by cause (started
by the killed worker, then again by another: the crash window; twice in
one process: a conflict retried; otherwise: a lease lost by a live
worker), and checks that every job ended ``completed`` exactly once in the
ZODB (status, output, one ``completed`` attempt; the indexes agree).  The
crash re-runs are compared with the bound stated in ``interfaces.py``
("Grouped commits: the crash window").  ``--write`` appends the figures to
bench/RESULTS.md.
"""
import argparse
import collections
import datetime
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time

import transaction

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, 'src'))

from remotetask import db as dbmod  # noqa: E402
from remotetask import processor, testing  # noqa: E402
from remotetask.tests import uptimetasks  # noqa: E402,F401  (tasks)

TASKS = 'remotetask.tests.uptimetasks'
POLICIES = (('grouped', 'default policy (grouped)'),
            ('sendmail', 'grouped=False'))


def statedBound(task, seconds, threads):
    """The most jobs a SIGKILL makes run again, per ``interfaces.py``:
    per thread, the open group (``batch='auto'``: at most the claim,
    ``AUTO_SECONDS / duration`` jobs, and at most the jobs that start
    within ``GROUP_SECONDS``) for a grouped task, the running job for a
    ``grouped=False`` one."""
    if task == 'sendmail':
        return threads
    claim = max(1, min(processor.AUTO_MAX,
                       int(processor.AUTO_SECONDS / seconds)))
    window = int(processor.GROUP_SECONDS / seconds) + 1
    return threads * min(claim, window)


def readLog(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [(e, int(j), int(p)) for e, j, p in
                (line.split() for line in f if line.strip())]


class Client:
    def __init__(self, uri, name):
        self.db = dbmod.openDB(uri)
        self.tm = transaction.TransactionManager()
        self.conn = self.db.open(self.tm)
        self.name = name

    def service(self):
        self.tm.begin()
        return dbmod.getService(self.conn, self.name, create=True)

    def close(self):
        self.tm.abort()
        self.conn.close()
        self.db.close()


def waitFor(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise RuntimeError('timed out after %ss waiting for %s' % (timeout, what))


def oneRun(args, uri, workdir, task, run):
    name = 'crash_%s_%d' % (task, run)
    log = os.path.join(workdir, name + '.log')
    client = Client(uri, name)
    service = client.service()
    ids = [service.add(task, {'log': log, 'seconds': args.seconds})
           for i in range(args.jobs)]
    client.tm.commit()
    procs = []
    logs = []
    try:
        for i in range(args.workers):
            out = open(os.path.join(workdir, '%s.w%d.out' % (name, i)), 'wb')
            logs.append(out)
            procs.append(subprocess.Popen(
                testing.remotetaskCommand(
                    'worker', '--db', uri, '--import', TASKS, '--service',
                    name, '--concurrency', args.threads, '--lease',
                    args.lease, '--maintenance-interval', '0.5',
                    '--worker-id', 'w%d' % i, '--log-level', 'WARNING'),
                env=testing.subprocessEnv(), stdout=out,
                stderr=subprocess.STDOUT))
        victim = procs[0]
        waitFor(lambda: client.service().count('completed') >= args.jobs // 4
                and any(e == 'end' and p == victim.pid
                        for e, j, p in readLog(log)),
                120, 'a quarter of the jobs done, some by the first worker')
        time.sleep(random.uniform(0, 0.3))
        victim.send_signal(signal.SIGSTOP)
        waitFor(lambda: stopped(victim.pid), 10, 'the worker to stop')
        # What a SIGKILL interrupts now: what it started, not committed
        # (read once it is dead: a commit it had sent may still land).
        started = {j for e, j, p in readLog(log)
                   if e == 'start' and p == victim.pid}
        running = started - {j for e, j, p in readLog(log)
                             if e == 'end' and p == victim.pid}
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        time.sleep(0.2)
        service = client.service()
        killedAt = service.count('completed')
        window = {j for j in started
                  if service.jobs[j].status != 'completed'}
        waitFor(lambda: client.service().count('completed') == args.jobs,
                180, 'all jobs completed')
        for proc in procs[1:]:
            testing.stopProcess(proc)
        service = client.service()
        problems = testing.checkConsistency(service)
        for jobid in ids:
            job = service.jobs[jobid]
            outcomes = [a['outcome'] for a in job.attempts]
            if job.status != 'completed' or job.output != jobid or \
                    outcomes.count('completed') != 1:
                problems.append('job %s: %s, output %r, attempts %s' % (
                    jobid, job.status, job.output, outcomes))
        lost = sum(1 for jobid in ids for a in service.jobs[jobid].attempts
                   if a['outcome'] == 'lost')
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for out in logs:
            out.close()
        client.close()

    starts = collections.defaultdict(list)
    for event, jobid, pid in readLog(log):
        if event == 'start':
            starts[jobid].append(pid)
    missing = set(ids) - set(starts)
    if missing:
        problems.append('never ran: %s' % sorted(missing))
    causes = collections.Counter()
    crashed = set()
    for jobid, pids in starts.items():
        for before, now in zip(pids, pids[1:]):
            if before == victim.pid and now != victim.pid:
                causes['crash'] += 1
                crashed.add(jobid)
            elif before == now:
                causes['conflict'] += 1
            else:
                causes['other'] += 1
    twice = sorted(j for j, pids in starts.items() if len(pids) > 1)
    if crashed != window:
        problems.append('re-run after the kill %s, open window at the kill '
                        '%s' % (sorted(crashed), sorted(window)))
    return {'task': task, 'twice': len(twice), 'crash': causes['crash'],
            'conflict': causes['conflict'], 'other': causes['other'],
            'window': len(window), 'running': len(running),
            'killedAt': killedAt, 'lost': lost, 'problems': problems}


def stopped(pid):
    with open('/proc/%d/stat' % pid) as f:
        return f.read().rsplit(')', 1)[1].split()[0] == 'T'


def span(values):
    return '%d' % values[0] if min(values) == max(values) else \
        '%d to %d' % (min(values), max(values))


def report(args, results, load, elapsed):
    lines = ['', '## The crash window of grouped commits (issue 17, '
             '`bench/crashwindow.py`, %s)' % datetime.datetime.now(
                 datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'), '',
             'Command: `flock /tmp/bench.lock python bench/crashwindow.py '
             '--runs %d --write`. Machine: %s, %d cores (shared). Load '
             'average (1, 5, 15 min) before: %s; after: %s. %.0f s.' % (
                 args.runs, platform.platform(), os.cpu_count(), load[0],
                 load[1], elapsed), '',
             '%d jobs of a %g s task (its runs logged O_APPEND outside the '
             'ZODB), %d `remotetask worker` processes of %d threads '
             '(`--batch auto`, `--lease %g`) over ZEO; the first one killed '
             '(SIGSTOP at a random moment once a quarter of the jobs were '
             'done, then SIGKILL). "Crash re-runs": jobs the killed worker '
             'started and another ran again; "open window": what it had '
             'started and not committed when killed (equal to the crash '
             're-runs in every run, checked); "conflict": runs again in '
             'the same process after a conflict; "other": lease lost by '
             'a live worker. Every job ended `completed` exactly once '
             'in the ZODB (status, output, one completed attempt; '
             'indexes agree) in every run unless said below.' % (
                 args.jobs, args.seconds, args.workers, args.threads,
                 args.lease), '',
             '| task policy | runs | jobs run twice (all causes) | crash '
             're-runs | of which running | conflict re-runs | other | stated '
             'bound (crash) | within |',
             '|---|---|---|---|---|---|---|---|---|']
    for task, label in POLICIES:
        rs = [r for r in results if r['task'] == task]
        if not rs:
            continue
        bound = statedBound(task, args.seconds, args.threads)
        worst = max(r['crash'] for r in rs)
        lines.append('| %s | %d | %s | %s | %s | %s | %s | %d | %s |' % (
            label, len(rs), span([r['twice'] for r in rs]),
            span([r['crash'] for r in rs]), span([r['running'] for r in rs]),
            span([r['conflict'] for r in rs]), span([r['other'] for r in rs]),
            bound, 'yes' if worst <= bound else 'NO (%d)' % worst))
    lines.append('')
    lines.append('Per run (task, `sendmail` being the `grouped=False` one: '
                 'crash re-runs / open window / running at the kill / jobs '
                 'completed at the kill): ' + '; '.join(
                     '%s %d/%d/%d/%d' % (r['task'], r['crash'], r['window'],
                                         r['running'], r['killedAt'])
                     for r in results) + '.')
    for r in results:
        for p in r['problems']:
            lines.append('- PROBLEM (%s): %s' % (r['task'], p))
    return '\n'.join(lines) + '\n'


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--runs', type=int, default=5)
    parser.add_argument('--jobs', type=int, default=300)
    parser.add_argument('--seconds', type=float, default=0.02)
    parser.add_argument('--workers', type=int, default=3)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--lease', type=float, default=3.0)
    parser.add_argument('--only', choices=[t for t, label in POLICIES])
    parser.add_argument('--write', action='store_true',
                        help='append the figures to bench/RESULTS.md')
    args = parser.parse_args(argv)
    if args.runs < 1 or args.jobs < 8 or args.workers < 2 or \
            args.threads < 1 or not 0 < args.seconds < 1 or args.lease <= 0:
        parser.error('need --runs >= 1, --jobs >= 8, --workers >= 2, '
                     '--threads >= 1, 0 < --seconds < 1, --lease > 0')
    load = [' '.join('%.2f' % x for x in os.getloadavg())]
    began = time.monotonic()
    results = []
    with tempfile.TemporaryDirectory(prefix='crashwindow-') as workdir:
        with testing.ZEOServer(os.path.join(workdir, 'Data.fs')) as server:
            for run in range(args.runs):
                for task, label in POLICIES:
                    if args.only and task != args.only:
                        continue
                    r = oneRun(args, server.uri, workdir, task, run)
                    results.append(r)
                    print(r, flush=True)
    load.append(' '.join('%.2f' % x for x in os.getloadavg()))
    text = report(args, results, load, time.monotonic() - began)
    print(text)
    if args.write:
        with open(os.path.join(HERE, 'RESULTS.md'), 'a') as f:
            f.write(text)
    return 1 if any(r['problems'] for r in results) else 0


if __name__ == '__main__':
    sys.exit(main())

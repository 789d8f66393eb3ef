"""More threads or workers on short jobs (issue 15): 4 against 1, same run.

    python bench/scaling.py [--runs 3] [--jobs 3000] [--sleep-jobs 600]
                            [--scenarios threads,processes,sleep] [--warm]
                            [--before SRC] [--output bench/RESULTS.md]

Three scenarios, each a backlog drained by 1 and then by 4 workers that
were started (imports done, database open) before the backlog is released
to them, timed from that release to the last job done:

- ``threads``: no-op jobs on FileStorage, ONE worker process with 1, then
  4 threads (``Processor(concurrency=...)``);
- ``processes``: no-op jobs over ZEO, 1, then 4 worker processes of one
  thread each;
- ``sleep``: jobs of a 10 ms ``time.sleep`` over ZEO, 1, then 4 worker
  processes; with the share of the workers' transactions that were
  retried (conflicts / (commits + conflicts)).

``--warm`` (the ZEO scenarios): the worker processes' processors are
running, registered and idle before the backlog comes, and the backlog
comes in ONE transaction; the drain is timed from that commit.  Without
it, the backlog is stored first and each worker starts its processor at
the go signal: the drain then includes each processor's start (its first
claims from a cold cache, before its first heartbeat gave it a claim
slot), once per worker, which weighs 3.3 times more in a 4-worker drain
of 600 10 ms jobs (2.3 s) than in a 1-worker one (7.5 s).  A worker that
runs for hours pays it once; ``--warm`` measures what a burst of jobs
costs running workers (see bench/RESULTS.md, 2026-12-02, "10 ms task
over ZEO, 4 workers against 1").

For each drain, the CPU seconds used by the worker processes and by the
ZEO server over the drain (``/proc/PID/stat``), so the ceiling of a
2-core machine shows: no-op jobs are CPU-bound.  ``--before SRC`` runs
the same drains with the remotetask source at SRC (a checkout's ``src``)
for the worker processes, the enqueuing process and the ZEO server,
alternating with this checkout's, in the same run.  Prints a markdown
section; with ``--output``, appends it to that file.
"""
import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SRC = os.path.join(ROOT, 'src')
sys.path.insert(0, SRC)

import transaction  # noqa: E402

from remotetask import db as dbmod  # noqa: E402
from remotetask import testing  # noqa: E402

AGENT = os.path.join(HERE, 'scaling_agent.py')
TICK = os.sysconf('SC_CLK_TCK')
TIMEOUT = 240.0
SCENARIOS = ('threads', 'processes', 'sleep')
#: --warm: seconds between the last worker's registration and the backlog.
WARM_SETTLE = 1.2


def cpuOf(pid):
    """CPU seconds (user + system) used so far by process ``pid``."""
    with open('/proc/%d/stat' % pid) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def env(src):
    environ = dict(os.environ)
    environ.pop('PYTHONDONTWRITEBYTECODE', None)
    environ['PYTHONPATH'] = os.pathsep.join([src, HERE])
    return environ


class Drain:
    """One drain: a fresh database, a backlog, ``workers`` processes."""

    def __init__(self, workdir, src, scenario, workers, n, warm=False):
        self.warm = warm and scenario != 'threads'
        self.workdir = workdir
        self.src = src
        self.scenario = scenario
        self.workers = workers
        self.n = n
        self.task = 'scale.sleep' if scenario == 'sleep' else 'scale.noop'
        self.env = env(src)
        if self.warm:
            self.env['SCALING_WARM'] = '1'

    def agent(self, *args):
        return [sys.executable, AGENT] + [str(a) for a in args]

    def run(self):
        path = os.path.join(self.workdir, 'scaling.fs')
        for suffix in ('', '.index', '.lock', '.tmp', '.zeo.log'):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
        if self.scenario == 'threads':
            return self._run('file://' + path, None)
        port = testing.freePort()
        server = subprocess.Popen(
            [sys.executable, '-m', 'ZEO.runzeo', '-a', '127.0.0.1:%d' % port,
             '-f', path], env=self.env, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        try:
            testing.waitForPort(port, 30, proc=server)
            return self._run('zeo://127.0.0.1:%d' % port, server)
        finally:
            testing.stopProcess(server)

    def _run(self, uri, server):
        subprocess.run(self.agent('enqueue', uri, 0 if self.warm else self.n,
                                  self.task),
                       env=self.env, check=True, timeout=TIMEOUT)
        gofile = os.path.join(self.workdir, 'go')
        if os.path.exists(gofile):
            os.remove(gofile)
        threaded = self.scenario == 'threads'
        count = 1 if threaded else self.workers
        procs = []
        for i in range(count):
            stats = os.path.join(self.workdir, 'agent%d.json' % i)
            for old in (stats, stats + '.ready'):
                if os.path.exists(old):
                    os.remove(old)
            argv = self.agent('work', uri, self.workers if threaded else 1,
                              gofile, stats)
            if threaded:
                argv.append(str(self.n))
            procs.append((subprocess.Popen(argv, env=self.env,
                                           stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL), stats))
        try:
            deadline = time.monotonic() + 60
            while not all(os.path.exists(s + '.ready') for p, s in procs):
                if time.monotonic() > deadline or any(
                        p.poll() is not None for p, s in procs):
                    raise RuntimeError('the worker processes did not start')
                time.sleep(0.01)
            pids = [p.pid for p, s in procs] + (
                [server.pid] if server else [])
            if self.warm:
                # Running and registered; a poll interval (1 s) more and
                # each has claimed (nothing) since the last one came.
                time.sleep(WARM_SETTLE)
                load = os.getloadavg()[0]
                started, cpu0 = self._release(uri, pids)
            else:
                cpu0 = [cpuOf(pid) for pid in pids]
                load = os.getloadavg()[0]
                started = time.perf_counter()
                open(gofile, 'w').close()
            if threaded:
                procs[0][0].wait(TIMEOUT)
                seconds = None
            else:
                seconds = self._wait(uri, started)
                cpu1 = [cpuOf(pid) for pid in pids]
        finally:
            for proc, stats in procs:
                if proc.poll() is None:
                    proc.terminate()
            for proc, stats in procs:
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        totals = {}
        trace = {}
        for proc, stats in procs:
            with open(stats) as f:
                found = json.load(f)
            if 'error' in found:
                raise RuntimeError(found['error'])
            for key, value in found.get('trace', {}).items():
                trace[key] = trace.get(key, 0) + value
            for key, value in found.items():
                if isinstance(value, (int, float)):
                    totals[key] = totals.get(key, 0) + value
        if threaded:
            seconds = totals['seconds']
            workerCpu, serverCpu = totals['cpu'], 0.0
        else:
            used = [b - a for a, b in zip(cpu0, cpu1)]
            workerCpu, serverCpu = sum(used[:len(procs)]), used[-1]
        conflicts = totals.get('conflicts', 0)
        return {'rate': self.n / seconds, 'seconds': seconds,
                'retried': conflicts / max(1, totals.get('commits', 0)
                                           + conflicts),
                'conflicts': conflicts, 'commits': totals.get('commits', 0),
                'handed_back': totals.get('handed_back', 0),
                'workers_cpu': workerCpu / seconds,
                'server_cpu': serverCpu / seconds, 'load': load,
                'trace': trace}

    def _release(self, uri, pids):
        """Add the backlog (one transaction); the time of its commit and
        the processes' CPU seconds then."""
        stamp = os.path.join(self.workdir, 'released.json')
        if os.path.exists(stamp):
            os.remove(stamp)
        subprocess.run(self.agent('release', uri, self.n, self.task, stamp,
                                  *pids),
                       env=self.env, check=True, timeout=TIMEOUT)
        with open(stamp) as f:
            found = json.load(f)
        return found['released'], [found['cpu'][str(pid)] for pid in pids]

    def _wait(self, uri, started):
        """Poll the number of jobs done until all are; seconds since go."""
        database = dbmod.openDB(uri)
        tm = transaction.TransactionManager()
        conn = database.open(tm)
        try:
            while True:
                tm.begin()
                service = dbmod.getService(conn)
                done = service.count('completed') + service.count('error')
                tm.abort()
                if done >= self.n:
                    return time.perf_counter() - started
                if time.perf_counter() - started > TIMEOUT:
                    raise TimeoutError('%d of %d jobs done' % (done, self.n))
                time.sleep(0.01)
        finally:
            conn.close()
            database.close()


def span(values, fmt='%.2f'):
    low, high = min(values), max(values)
    if fmt % low == fmt % high:
        return fmt % low
    return (fmt + '-' + fmt) % (low, high)


def measure(args, log=print):
    sources = [('after', SRC)]
    if args.before:
        sources.insert(0, ('before', os.path.abspath(args.before)))
    import compileall
    for name, src in sources:
        compileall.compile_dir(src, quiet=1)
    results = {}
    workdir = tempfile.mkdtemp(prefix='rt-scaling-')
    try:
        for run in range(args.runs):
            for scenario in args.scenarios:
                n = args.sleep_jobs if scenario == 'sleep' else args.jobs
                for name, src in sources:
                    for workers in (1, 4):
                        got = Drain(workdir, src, scenario, workers,
                                    n, args.warm).run()
                        results.setdefault((scenario, name, workers),
                                           []).append(got)
                        log('run %d %-9s %-6s %d: %6.0f jobs/s, %5.1f %% '
                            'retried, CPU workers %.2f + server %.2f cores, '
                            'load %.1f, %d commits, %d handed back' % (
                                run + 1, scenario, name, workers, got['rate'],
                                100 * got['retried'], got['workers_cpu'],
                                got['server_cpu'], got['load'],
                                got['commits'], got['handed_back']))
                        trace = got['trace']
                        for what in ('load', 'store'):
                            mine = [k for k in trace
                                    if k.startswith(what + ' ')]
                            if mine:
                                log('    %ss per job: %.2f (%s)' % (
                                    what, sum(trace[k] for k in mine) / n,
                                    ', '.join('%s %.2f' % (
                                        k.split(' ', 1)[1], trace[k] / n)
                                        for k in sorted(
                                            mine, key=lambda k: -trace[k])
                                        [:6])))
                        for key, count in sorted(trace.items(),
                                                 key=lambda kv: -kv[1]):
                            if key.split(' ', 1)[0] not in ('load',
                                                            'store'):
                                log('    %5d %s' % (count, key))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return results, sources


LABELS = {
    'threads': 'no-op, FileStorage, 4 threads vs 1 (one process)',
    'processes': 'no-op, ZEO, 4 worker processes vs 1',
    'sleep': '10 ms task, ZEO, 4 worker processes vs 1',
}


def perJob(result):
    """CPU milliseconds (workers and server) per job: steadier than the
    rates on a shared machine."""
    return 1000 * (result['workers_cpu'] + result['server_cpu']) / \
        result['rate']


def section(results, sources, args):
    loads = [r['load'] for runs in results.values() for r in runs]
    lines = ['', '## Scaling: 4 workers against 1 (`bench/scaling.py`, %s)'
             % datetime.datetime.utcnow().strftime('%Y-%m-%d %H:%M UTC'), '',
             '`python bench/scaling.py --runs %d --jobs %d --sleep-jobs '
             '%d%s%s`; %d cores, load average (1 min) %s at the drains\' '
             'start. Ranges over the runs; a ratio pairs the drains of one '
             'run.'
             % (args.runs, args.jobs, args.sleep_jobs,
                ' --warm' if args.warm else '',
                ' --before SRC' if args.before else '', os.cpu_count(),
                span(loads, '%.1f')), '',
             '| scenario | code | 1 worker jobs/s | 4 workers jobs/s | '
             '4 vs 1 | retried, 1 / 4 | CPU cores used, 1: workers + '
             'server | 4: workers + server | CPU ms per job, 1 / 4 |',
             '|---|---|---|---|---|---|---|---|---|']
    for scenario in args.scenarios:
        for name, src in sources:
            one = results.get((scenario, name, 1))
            four = results.get((scenario, name, 4))
            if not one or not four:
                continue
            ratios = [b['rate'] / a['rate'] for a, b in zip(one, four)]
            lines.append(
                '| %s | %s | %s | %s | %sx | %s %% / %s %% | %s + %s | '
                '%s + %s | %s / %s |' % (
                    LABELS[scenario], name,
                    span([r['rate'] for r in one], '%.0f'),
                    span([r['rate'] for r in four], '%.0f'),
                    span(ratios),
                    span([100 * r['retried'] for r in one], '%.1f'),
                    span([100 * r['retried'] for r in four], '%.1f'),
                    span([r['workers_cpu'] for r in one]),
                    span([r['server_cpu'] for r in one]),
                    span([r['workers_cpu'] for r in four]),
                    span([r['server_cpu'] for r in four]),
                    span([perJob(r) for r in one]),
                    span([perJob(r) for r in four])))
    return '\n'.join(lines) + '\n'


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--runs', type=int, default=3)
    parser.add_argument('--jobs', type=int, default=3000,
                        help='no-op jobs per drain')
    parser.add_argument('--sleep-jobs', type=int, default=600,
                        help='10 ms jobs per drain')
    parser.add_argument('--scenarios', default=','.join(SCENARIOS))
    parser.add_argument('--before', help="another checkout's src directory")
    parser.add_argument('--warm', action='store_true',
                        help='ZEO scenarios: the workers run (idle) before '
                        'the backlog comes, in one transaction')
    parser.add_argument('--trace', action='store_true',
                        help='count the conflicts by object class and '
                        'where (claim or run), and the objects loaded and '
                        'stored per job by class')
    parser.add_argument('--output', help='append the section to this file')
    args = parser.parse_args(argv)
    args.scenarios = [s.strip() for s in args.scenarios.split(',') if s]
    if args.warm and 'threads' in args.scenarios:
        parser.error('--warm is for the ZEO scenarios (processes, sleep): '
                     'the threads scenario\'s one process holds the file')
    for scenario in args.scenarios:
        if scenario not in SCENARIOS:
            parser.error('unknown scenario %r (known: %s)'
                         % (scenario, ', '.join(SCENARIOS)))
    for what in ('runs', 'jobs', 'sleep_jobs'):
        if getattr(args, what) < 1:
            parser.error('--%s must be >= 1' % what.replace('_', '-'))
    if args.before and not os.path.isdir(os.path.join(args.before,
                                                      'remotetask')):
        parser.error('--before must be a source directory holding '
                     'remotetask/, not %r' % args.before)
    if args.trace:
        os.environ.setdefault('SCALING_TRACE', '1')
    results, sources = measure(args)
    text = section(results, sources, args)
    print(text)
    if args.output:
        with open(args.output, 'a') as f:
            f.write(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())

"""Start-up cost of the commands: before/after the CLI split (issue 10).

    python bench/startup.py [--before COMMIT] [--runs N]

Runs, with the source tree at COMMIT (``git archive`` into a temporary
directory; default 32b0aca, the last commit before the split) and with this
checkout's ``src`` (copied), in the same run and alternately (the machine is
noisy):

- ``python -c pass`` (the interpreter's own start, with this machine's site
  ``.pth`` files);
- ``import ZODB, ZODB.FileStorage`` (the floor of a command that opens a
  FileStorage: the ZODB, persistent, transaction, BTrees);
- ``remotetask --help``;
- ``remotetask status 1`` on a FileStorage holding one job (no server): from
  the process's start to its exit (the job printed, the database closed, the
  interpreter finalized), wall clock and CPU time (user + system, which the
  load of the other processes on the machine disturbs less);
- ``remotetask worker``: from its start to its "processor ... started" log
  line (the database open, the service checked, the worker threads started,
  each claiming at once), then SIGTERM.  After the split a worker also
  shares its FileStorage through an embedded ZEO server; since issue 10's
  start-up work that server starts right after that line (docs/startup.md):
  the time to its "serving ... to local processes" line is reported too;
  and the worker's CPU time (user + system) from its start to that line,
  taken in the process itself (``time.process_time()`` in a log handler);
- ``python -X importtime -c 'import remotetask.cli'``: the import time of
  the command's package (microseconds, as Python counts them).

Both trees are compiled to bytecode first (``compileall``), as an installed
package is: this machine's environment sets PYTHONDONTWRITEBYTECODE, which
would otherwise make every run compile remotetask's sources again.

Prints a Markdown table of medians (seconds), the ratio after/before of the
medians and the range of the per-run ratios, for bench/RESULTS.md.
"""
import argparse
import compileall
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def env(src):
    e = dict(os.environ)
    e['PYTHONPATH'] = src
    return e


def _childrenCPU():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(argv, src, cwd):
    """(wall seconds, CPU seconds) of running ``argv``."""
    cpu = _childrenCPU()
    start = time.perf_counter()
    subprocess.run(argv, env=env(src), cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start, _childrenCPU() - cpu


SERVING = rb'serving \S+ to local processes'


def workerStart(src, cwd, db, serving=False):
    """Seconds from the worker's start to its "processor ... started" line
    (and, with ``serving``, to its embedded server's "serving" line)."""
    log = os.path.join(cwd, 'worker.log')
    with open(log, 'wb') as f:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, '-m', 'remotetask', 'worker', '--db', db,
             '--import', 'remotetask.tracker'], env=env(src), cwd=cwd,
            stdout=f, stderr=subprocess.STDOUT)
    times = {}
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with open(log, 'rb') as f:
                text = f.read()
            now = time.perf_counter() - start
            if 'started' not in times and re.search(
                    rb'processor \S+ started', text):
                times['started'] = now
            if serving and 'serving' not in times and re.search(
                    SERVING, text):
                times['serving'] = now
            if 'started' in times and ('serving' in times or not serving):
                break
            if proc.poll() is not None:
                raise RuntimeError(text.decode(errors='replace'))
            time.sleep(0.002)
        else:
            raise RuntimeError('the worker did not start: %s' % text[-2000:])
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    return times


#: Runs ``python -m remotetask worker ...`` (the tree's own ``__main__``) with
#: a log handler that prints the process's CPU time (user + system, since
#: its start) at the "processor ... started" line, then exits at once.
WORKER_CPU = r'''
import logging, os, runpy, sys, time

class Started(logging.Handler):
    def emit(self, record):
        message = record.getMessage()
        if message.startswith('processor ') and ' started' in message:
            sys.stderr.write('CPU %f\n' % time.process_time())
            sys.stderr.flush()
            os._exit(0)

logging.getLogger('remotetask.worker').addHandler(Started())
sys.argv = ['remotetask'] + sys.argv[1:]
runpy.run_module('remotetask', run_name='__main__', alter_sys=True)
'''


def workerCPU(src, cwd, db):
    """CPU seconds the worker used from its start to "processor started"."""
    out = subprocess.run(
        [sys.executable, '-c', WORKER_CPU, 'worker', '--db', db, '--import',
         'remotetask.tracker'], env=env(src), cwd=cwd, capture_output=True,
        text=True, timeout=60)
    for line in out.stderr.splitlines():
        if line.startswith('CPU '):
            return float(line[4:])
    raise RuntimeError(out.stderr[-2000:])


def importTime(src, cwd):
    out = subprocess.run(
        [sys.executable, '-X', 'importtime', '-c', 'import remotetask.cli'],
        env=env(src), cwd=cwd, capture_output=True, text=True, check=True)
    for line in out.stderr.splitlines():
        parts = line.split('|')
        if len(parts) == 3 and parts[2].strip() == 'remotetask.cli':
            return int(parts[1]) / 1e6
    raise RuntimeError(out.stderr[-2000:])


def prepare(src, cwd):
    db = os.path.join(cwd, 'Data.fs')
    subprocess.run(
        [sys.executable, '-m', 'remotetask', 'add', '--db', db, '--import',
         'remotetask.tracker', 'remotetask.tracker', 'null',
         '--start-later'], env=env(src), cwd=cwd, check=True,
        stdout=subprocess.DEVNULL)
    return db


def makeTrees(tmp, commit):
    """{'before': src of ``commit``, 'after': a copy of this checkout's
    src}, both in ``tmp`` and compiled to bytecode."""
    before = os.path.join(tmp, 'before')
    os.makedirs(before)
    archive = subprocess.run(['git', 'archive', commit, 'src'],
                             cwd=ROOT, capture_output=True, check=True)
    subprocess.run(['tar', '-x', '-C', before], input=archive.stdout,
                   check=True)
    after = os.path.join(tmp, 'after')
    shutil.copytree(os.path.join(ROOT, 'src'), os.path.join(after, 'src'),
                    ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
    trees = {'before': os.path.join(before, 'src'),
             'after': os.path.join(after, 'src')}
    for src in trees.values():
        compileall.compile_dir(src, quiet=1)
    return trees


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--before', default='32b0aca')
    parser.add_argument('--runs', type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trees = makeTrees(tmp, args.before)
        dirs = {}
        dbs = {}
        for name, src in trees.items():
            dirs[name] = os.path.join(tmp, 'run-' + name)
            os.makedirs(dirs[name])
            dbs[name] = prepare(src, dirs[name])
        rows = {}
        load0 = os.getloadavg()[0]

        def add(label, name, value):
            rows.setdefault(label, {}).setdefault(name, []).append(value)

        for i in range(args.runs):
            for name, src in trees.items():
                cwd = dirs[name]
                for label, argv in (
                        ('python -c pass', ['-c', 'pass']),
                        ('python -c "import ZODB, ZODB.FileStorage" (floor)',
                         ['-c', 'import ZODB, ZODB.FileStorage']),
                        ('remotetask --help', ['-m', 'remotetask', '--help']),
                        ('remotetask status 1', [
                            '-m', 'remotetask', 'status', '--db', dbs[name],
                            '1'])):
                    wall, cpu = timed([sys.executable] + argv, src, cwd)
                    add(label, name, wall)
                    if label.startswith('remotetask status'):
                        add(label + ' (CPU time)', name, cpu)
                times = workerStart(src, cwd, dbs[name],
                                    serving=name == 'after')
                add('remotetask worker: start to "processor started"', name,
                    times['started'])
                add('remotetask worker: CPU time to "processor started"',
                    name, workerCPU(src, cwd, dbs[name]))
                if 'serving' in times:
                    add('remotetask worker: start to its embedded server '
                        '"serving"', name, times['serving'])
                add('import remotetask.cli (-X importtime)', name,
                    importTime(src, cwd))
        load1 = os.getloadavg()[0]
    print('Written by `python bench/startup.py --before %s --runs %d` on %s.'
          % (args.before, args.runs,
             time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())))
    print()
    print('Machine: %s, %d cores, Python %s; load average %.2f -> %.2f.' % (
        platform.platform(), os.cpu_count(), platform.python_version(),
        load0, load1))
    print()
    print('| measure (median of %d, s) | before | after | after/before '
          '(medians) | per-run ratios |' % args.runs)
    print('|---|---|---|---|---|')
    for label, values in rows.items():
        a = statistics.median(values['after'])
        if 'before' not in values:
            print('| %s | - | %.3f | - | - |' % (label, a))
            continue
        b = statistics.median(values['before'])
        ratios = [x / y for x, y in zip(values['after'], values['before'])]
        print('| %s | %.3f | %.3f | %.2f | %.2f-%.2f |' % (
            label, b, a, a / b, min(ratios), max(ratios)))


if __name__ == '__main__':
    main()

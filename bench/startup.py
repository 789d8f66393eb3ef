"""Start-up cost of the commands: before/after the CLI split (issue 10).

    python bench/startup.py [--before COMMIT] [--runs N]

Runs, with the source tree at COMMIT (``git archive`` into a temporary
directory; default 32b0aca, the last commit before the split) and with this
checkout's ``src``, in the same run and alternately (the machine is noisy):

- ``python -c pass`` (the interpreter's own start, the floor);
- ``remotetask --help``;
- ``remotetask status 1`` on a FileStorage holding one job (no server);
- ``remotetask worker``: from its start to its "processor ... started" log
  line (then SIGTERM); after the split it also starts the embedded ZEO
  server and connects through it;
- ``python -X importtime -c 'import remotetask.cli'``: the import time of
  the command's package (microseconds, as Python counts them).

Prints a Markdown table of medians (seconds) and the ratio after/before,
for bench/RESULTS.md.
"""
import argparse
import os
import platform
import re
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


def timed(argv, src, cwd):
    start = time.perf_counter()
    subprocess.run(argv, env=env(src), cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def workerStart(src, cwd, db):
    log = os.path.join(cwd, 'worker.log')
    with open(log, 'wb') as f:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, '-m', 'remotetask', 'worker', '--db', db,
             '--import', 'remotetask.tracker'], env=env(src), cwd=cwd,
            stdout=f, stderr=subprocess.STDOUT)
    try:
        while True:
            with open(log, 'rb') as f:
                if re.search(rb'processor \S+ started', f.read()):
                    elapsed = time.perf_counter() - start
                    break
            if proc.poll() is not None:
                raise RuntimeError(open(log).read())
            time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    return elapsed


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


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--before', default='32b0aca')
    parser.add_argument('--runs', type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        before = os.path.join(tmp, 'before')
        os.makedirs(before)
        archive = subprocess.run(['git', 'archive', args.before, 'src'],
                                 cwd=ROOT, capture_output=True, check=True)
        subprocess.run(['tar', '-x', '-C', before], input=archive.stdout,
                       check=True)
        trees = {'before': os.path.join(before, 'src'),
                 'after': os.path.join(ROOT, 'src')}
        dirs = {}
        dbs = {}
        for name, src in trees.items():
            dirs[name] = os.path.join(tmp, 'run-' + name)
            os.makedirs(dirs[name])
            dbs[name] = prepare(src, dirs[name])
        rows = {}
        load0 = os.getloadavg()[0]
        for i in range(args.runs):
            for name, src in trees.items():
                cwd = dirs[name]
                for label, measure in (
                        ('python -c pass', lambda: timed(
                            [sys.executable, '-c', 'pass'], src, cwd)),
                        ('remotetask --help', lambda: timed(
                            [sys.executable, '-m', 'remotetask', '--help'],
                            src, cwd)),
                        ('remotetask status 1', lambda: timed(
                            [sys.executable, '-m', 'remotetask', 'status',
                             '--db', dbs[name], '1'], src, cwd)),
                        ('remotetask worker: start to "processor started"',
                         lambda: workerStart(src, cwd, dbs[name])),
                        ("import remotetask.cli (-X importtime)",
                         lambda: importTime(src, cwd))):
                    rows.setdefault(label, {}).setdefault(name, []).append(
                        measure())
        load1 = os.getloadavg()[0]
    print('Written by `python bench/startup.py --before %s --runs %d` on %s.'
          % (args.before, args.runs,
             time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())))
    print()
    print('Machine: %s, %d cores, Python %s; load average %.2f -> %.2f.' % (
        platform.platform(), os.cpu_count(), platform.python_version(),
        load0, load1))
    print()
    print('| measure (median of %d, s) | before | after | after/before |'
          % args.runs)
    print('|---|---|---|---|')
    for label, values in rows.items():
        b = statistics.median(values['before'])
        a = statistics.median(values['after'])
        print('| %s | %.3f | %.3f | %.2f |' % (label, b, a, a / b))


if __name__ == '__main__':
    main()

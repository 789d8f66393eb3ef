"""Make the screenshots of the management page in docs/ (run it again after
changing the page):

    python docs/screenshots.py [--output-dir docs]

Writes ``page-activity.png`` (the activity panel: charts and per-task
table) and ``page-job.png`` (the whole page at 1,280 px, open on a failed
job through its URL ``#/jobs/ID``).

How the data is made: an hour of history is written first through the
service's own calls with explicit times (``add``/``claim``/``run`` with
``now=``: each minute of the last hour and each hour of the last day,
jobs of the example tasks that complete, fail and are retried, with run
times drawn around a task's own median, and a backlog of delayed jobs that
grows and shrinks): the statistics count them like any run (the task's
code runs; only the clock is given).  Then `remotetask serve` runs on that
database, a burst of live jobs is added through the JSON API, and a
headless Chromium (the one the browser tests drive) takes the pictures.
"""
import argparse
import math
import os
import random
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), 'src'))

from remotetask import testing, zcml  # noqa: E402
from remotetask.db import ServiceRunner, openDB  # noqa: E402
from remotetask.web.auth import addUser  # noqa: E402

CHROMIUM = '/usr/bin/chromium'
EXAMPLES = os.path.join(os.path.dirname(HERE), 'src', 'remotetask',
                        'examples.zcml')
#: task: (median run time in seconds, input); ``fail`` always fails.
PROFILE = {'echo': (0.02, 'x'), 'sum': (0.15, [1, 2]), 'fail': (0.6, 'x'),
           'sleep': (2.5, 0)}


def history(path, now, seed=14):
    """The last day of runs, through the service with explicit times."""
    rng = random.Random(seed)
    zcml.loadFile(EXAMPLES)
    db = openDB('file://' + path)
    runner = ServiceRunner(db)
    backlog = []

    def period(service, start, step, scale):
        # a backlog of delayed jobs that grows and shrinks
        want = int(30 + 25 * math.sin(start / 900.0))
        while len(backlog) < want:
            backlog.append(service.add('echo', 'later', now=start,
                                       delay=10 * 86400))
        while len(backlog) > want:
            service.cancel(backlog.pop(), now=start)
        load = 0.6 + 0.4 * math.sin(start / 1300.0) ** 2
        for task, (median, input) in PROFILE.items():
            runs = int(rng.randint(1, 9) * load * scale)
            if task == 'fail':
                runs = rng.choice([0, 0, 0, 1, 2])
            for _ in range(runs):
                begin = start + rng.uniform(0, step - 30)
                seconds = median * math.exp(rng.gauss(0, 0.5))
                jobid = service.add(task, input, now=begin, max_retries=0)
                [job] = claimOne(service, jobid, begin)
                service.run(job, now=begin + seconds)
    # the hours of the day (fewer runs per hour, but every hour)
    hour = int(now // 3600) * 3600
    for h in range(23, 1, -1):
        runner(period, hour - h * 3600, 3600, 3)
    # each minute of the last hour (from the clock now: writing the day
    # takes a while on a loaded machine)
    minute = int(time.time() // 60) * 60
    for m in range(60, 0, -1):
        runner(period, minute - m * 60, 60, 1)
    db.close()


def claimOne(service, jobid, now):
    """Claim ``jobid`` (the only job due at ``now`` besides the far-off
    backlog): the processor's own claim, at the given time."""
    claimed = service.claim(now=now, worker='history')
    assert [job.id for job in claimed] == [jobid], claimed
    return claimed


def api(base, method, path, data=None):
    return testing.apiCall(base, method, path, data, ('mia', 'mia-pw'))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--output-dir', default=HERE)
    args = parser.parse_args(argv)
    os.makedirs(args.output_dir, exist_ok=True)
    started = time.time()
    with tempfile.TemporaryDirectory() as workdir:
        path = os.path.join(workdir, 'Data.fs')
        history(path, time.time())
        print('history written in %.0f s' % (time.time() - started))
        users = os.path.join(workdir, 'users.json')
        addUser(users, 'mia', 'mia-pw', 'manager')
        port = testing.freePort()
        log = open(os.path.join(workdir, 'serve.log'), 'wb')
        proc = subprocess.Popen(
            testing.remotetaskCommand('serve', '--db', path, '--port', port,
                                      '--users', users, '--concurrency', 2),
            stdout=log, stderr=subprocess.STDOUT,
            env=testing.subprocessEnv(), cwd=workdir)
        try:
            testing.waitForPort(port, 60, proc=proc)
            base = 'http://127.0.0.1:%d/' % port
            for i in range(20):
                api(base, 'POST', 'api/jobs', {'task': 'sum', 'input': [i, 1]})
            failed = api(base, 'POST', 'api/jobs', {
                'task': 'fail', 'max_retries': 0, 'input':
                'could not reach https://example.invalid/reports/2026/12/'
                'quarterly-summary-of-every-region-' + 'and-more-' * 12})
            shoot(base, failed['id'], args.output_dir)
        finally:
            proc.terminate()
            proc.wait(30)
            log.close()
    return 0


def shoot(base, jobid, outdir):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            '--headless', '--no-sandbox', '--disable-gpu'])
        page = browser.new_page(viewport={'width': 1280, 'height': 900},
                                bypass_csp=True)
        page.set_default_timeout(60000)
        page.goto(base)
        page.fill('#name', 'mia')
        page.fill('#password', 'mia-pw')
        page.click('#login-button')
        page.wait_for_selector('#task-stats tr[data-task=sum]')
        page.wait_for_function(
            "() => window.remotetaskCharts.throughput && window."
            "remotetaskCharts.throughput.data[1].some(v => v > 0)")
        page.wait_for_timeout(2500)     # the live jobs' minute is drawn
        page.locator('#stats-card').screenshot(
            path=os.path.join(outdir, 'page-activity.png'))
        page.goto(base + 'jobs/%d' % jobid)
        page.wait_for_selector('#detail-title:has-text("Job %d ")' % jobid)
        page.wait_for_timeout(2500)
        page.screenshot(path=os.path.join(outdir, 'page-job.png'),
                        full_page=True)
        width = page.evaluate('document.documentElement.scrollWidth')
        print('page width at 1,280 px: %d px' % width)
        browser.close()


if __name__ == '__main__':
    sys.exit(main())

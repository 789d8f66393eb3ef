"""The activity panel (charts, per-task table) and the jobs' URLs of the
management page in a real headless Chromium, against a real `remotetask
serve` process, at 1,280 px."""
import re

import pytest

from remotetask.tests.test_web_browser import (  # noqa: F401  fixtures
    apiCall, browser, login, row, server)

pytestmark = pytest.mark.browser

WIDE = ("document.documentElement.scrollWidth <= window.innerWidth"
        " && document.body.scrollWidth <= window.innerWidth")


def total(page, chart, series):
    return page.evaluate(
        "([c, s]) => { const u = window.remotetaskCharts[c];"
        " return u ? u.data[s].reduce((a, v) => a + (v || 0), 0) : -1; }",
        [chart, series])


def statsRow(page, task):
    cells = page.locator('#task-stats tbody tr[data-task="%s"] td' % task)
    return dict(zip(['task', 'runs', 'failed', 'failure_rate', 'retried',
                     'p50', 'p95', 'last_failure', 'waiting'],
                    cells.all_text_contents()))


def test_charts_table_and_job_urls(browser, server):
    page, errors = login(browser, server, 'mia', 'mia-pw')
    console = []
    page.on('console', lambda m: console.append(m.text)
            if m.type == 'error' else None)
    page.set_viewport_size({'width': 1280, 'height': 900})
    page.wait_for_selector('#processing-state:text-is("processing")')

    # A burst of jobs, added by another client: 12 complete, 3 fail, one
    # of them with a long error without spaces.
    for i in range(12):
        apiCall(server, 'POST', 'api/jobs', {'task': 'sum', 'input': [i, 1]})
    long = 'x' * 600
    failed = [apiCall(server, 'POST', 'api/jobs',
                      {'task': 'fail', 'input': text, 'max_retries': 0})['id']
              for text in ('one', 'two', long)]

    # The per-task table shows the right counts, live.
    page.wait_for_selector('#task-stats tr[data-task=sum] '
                           'td[data-col=runs]:text-is("12")')
    page.wait_for_selector('#task-stats tr[data-task=fail] '
                           'td[data-col=failed]:text-is("3")')
    assert statsRow(page, 'sum')['failure_rate'] == '0.0%'
    assert statsRow(page, 'fail')['failure_rate'] == '100%'
    assert statsRow(page, 'sum')['p50'].endswith('s')
    last = page.locator('#task-stats tr[data-task=fail] '
                        'td[data-col=last_failure] a')
    assert last.text_content() == '#%d' % failed[-1]

    # The throughput chart has the points (per minute, the last hour).
    page.wait_for_function(
        "() => window.remotetaskCharts.throughput && window.remotetaskCharts"
        ".throughput.data[1].reduce((a, v) => a + (v || 0), 0) === 12")
    assert total(page, 'throughput', 2) == 3
    assert page.locator('#chart-throughput canvas').count() == 1
    assert len(page.evaluate(
        "window.remotetaskCharts.throughput.data[0]")) == 60
    labels = page.evaluate(
        "window.remotetaskCharts.runtime.series.map(s => s.label)")
    assert {'sum p50', 'sum p95', 'fail p50', 'fail p95'} <= set(labels)
    assert total(page, 'runtime', labels.index('sum p50')) > 0
    # ... and per hour over the last day.
    page.click('#stats-range button[data-range=hours]')
    page.wait_for_function(
        "() => window.remotetaskCharts.throughput.data[0].length === 24")
    assert total(page, 'throughput', 1) == 12

    # Sortable: by failures, then by task name.
    page.click('#task-stats th[data-key=failed]')
    first = page.locator('#task-stats tbody tr').first
    assert first.get_attribute('data-task') == 'fail'
    page.click('#task-stats th[data-key=task]')
    tasks = page.locator('#task-stats tbody tr').evaluate_all(
        'rows => rows.map(r => r.dataset.task)')
    assert tasks == sorted(tasks)

    # The last failure links to its job: the URL opens its detail, whose
    # long error wraps inside the page.
    last.click()
    page.wait_for_selector('#detail-title:has-text("Job %d ")' % failed[-1])
    assert page.url.endswith('#/jobs/%d' % failed[-1])
    page.wait_for_selector('#detail-attempts tbody tr .attempt-error')
    assert page.evaluate(WIDE), page.evaluate(
        "[document.documentElement.scrollWidth, window.innerWidth]")
    # Back returns to the list: the detail closes, the URL has no job.
    page.go_back()
    page.wait_for_selector('#detail', state='hidden')
    assert '#/jobs/' not in page.url

    # A row of the jobs table opens the job under its own URL; another
    # row, another entry; back returns to the first, then to the list.
    first_job = failed[0]
    row(page, 'jobs', first_job).locator('td').nth(2).click()
    page.wait_for_selector('#detail-title:has-text("Job %d ")' % first_job)
    assert page.url.endswith('#/jobs/%d' % first_job)
    row(page, 'jobs', failed[1]).locator('td').nth(2).click()
    page.wait_for_selector('#detail-title:has-text("Job %d ")' % failed[1])
    page.go_back()
    page.wait_for_selector('#detail-title:has-text("Job %d ")' % first_job)
    page.go_back()
    page.wait_for_selector('#detail', state='hidden')

    # A job's URL, opened afresh (/jobs/ID redirects to the page, #/jobs/ID).
    page.goto(server + 'jobs/%d' % failed[0])
    page.wait_for_selector('#detail-title:has-text("Job %d ")' % failed[0])
    assert re.search(r'/#/jobs/%d$' % failed[0], page.url)
    page.wait_for_selector('#task-stats tr[data-task=sum]')
    assert page.evaluate(WIDE)
    page.click('#detail-close')
    assert '#/jobs/' not in page.url

    # The clean-up box ticks what the API and `remotetask clean` remove.
    from remotetask.cli.jobs import CLEANABLE
    from remotetask.interfaces import CLEANABLE_STATUSES
    ticked = page.eval_on_selector_all(
        '#clean [name=status]:checked', 'boxes => boxes.map(b => b.value)')
    assert ticked == list(CLEANABLE_STATUSES) == list(CLEANABLE)

    assert errors == [] and console == []
    page.close()

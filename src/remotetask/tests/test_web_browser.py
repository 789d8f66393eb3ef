"""The management page in a real headless Chromium, against a real
`remotetask serve` process (login, add, live progress, cancel, retry,
delete, clean, cron jobs, filters, viewer role)."""
import contextlib
import os
import re
import subprocess

import pytest

from remotetask import testing
from remotetask.tests.webhelpers import usersFile

CHROMIUM = '/usr/bin/chromium'
ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
        '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync']

pytestmark = pytest.mark.browser


@pytest.fixture(scope='module')
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip('the playwright package is not installed')
    if not os.path.exists(CHROMIUM):
        pytest.skip('no browser: %s is missing (apt-get install chromium)'
                    % CHROMIUM)
    with sync_playwright() as p:
        try:
            chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        except Exception as e:
            pytest.skip('Chromium can not be launched here: %s' % e)
        yield chromium
        chromium.close()


@contextlib.contextmanager
def serving(tmp_path, db=None, *options):
    """A `remotetask serve` process on a free port (database ``db``, by
    default ``tmp_path``/Data.fs; users mia and vic, see ``usersFile``;
    more command line ``options``); yields its base URL."""
    path, token = usersFile(tmp_path)
    port = testing.freePort()
    log = open(str(tmp_path / 'serve.log'), 'wb')
    proc = subprocess.Popen(
        testing.remotetaskCommand('serve', '--db', db or tmp_path / 'Data.fs',
                                  '--port', port, '--users', path,
                                  '--concurrency', 2, *options),
        stdout=log, stderr=subprocess.STDOUT, env=testing.subprocessEnv(),
        cwd=str(tmp_path))
    try:
        testing.waitForPort(port, 60, proc=proc)
        yield 'http://127.0.0.1:%d/' % port
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def server(tmp_path):
    with serving(tmp_path) as url:
        yield url


def login(browser, url, name, password):
    # bypass_csp: the page's CSP forbids eval, which wait_for_function uses.
    page = browser.new_page(viewport={'width': 1400, 'height': 1000},
                            bypass_csp=True)
    page.set_default_timeout(30000)
    errors = []
    page.on('pageerror', lambda e: errors.append(str(e)))
    page.on('dialog', lambda dialog: dialog.accept())
    page.goto(url)
    assert page.url.endswith('/login')
    page.fill('#name', name)
    page.fill('#password', password)
    page.click('#login-button')
    page.wait_for_selector('#user:has-text("%s")' % name)
    return page, errors


def row(page, table, jobid):
    return page.locator('#%s tbody tr[data-id="%s"]' % (table, jobid))


def addJob(page, task, input='', delay=None):
    """Fill and submit the "Add a job" form; return the new job's id (the
    page then shows its detail)."""
    before = page.evaluate("document.querySelector('#detail').hidden ? '' :"
                           " document.querySelector('#detail-title')"
                           ".textContent")
    form = page.locator('#add-job')
    form.locator('select[name=task]').select_option(task)
    form.locator('textarea[name=input]').fill(input)
    form.locator('input[name=delay]').fill('' if delay is None
                                           else str(delay))
    form.locator('button[type=submit]').click()
    page.wait_for_function(
        "(before) => !document.querySelector('#detail').hidden && "
        "document.querySelector('#detail-title').textContent !== before",
        arg=before)
    title = page.locator('#detail-title').text_content()
    return int(re.search(r'Job (\d+)', title).group(1))


def test_management_page(browser, server, tmp_path):
    page, errors = login(browser, server, 'mia', 'mia-pw')
    page.evaluate('window.notReloaded = true')
    # (the first refresh may still be on its way after the login)
    page.wait_for_selector('#processing-state:text-is("processing")')

    # The workers panel lists serve's own processor (the registry).
    worker = page.locator('#workers tr[data-worker]').first
    worker.wait_for()
    assert 'serve' in worker.text_content()
    assert 'sum' in worker.text_content()

    # A job added through the form runs; its detail shows the result.
    done = addJob(page, 'sum', '[1, 2, 3]')
    page.wait_for_selector('#detail-title .status-completed')
    assert page.locator('#detail-result').text_content() == '6'
    assert page.locator('#detail-attempts tbody tr').count() == 1

    # A sleeping job shows a progress bar that moves, without a reload.
    sleeper = addJob(page, 'sleep', '3')
    bar = row(page, 'jobs', sleeper).locator('[role=progressbar]')
    page.wait_for_function(
        "(id) => { const bar = document.querySelector("
        "'#jobs tr[data-id=\"' + id + '\"] [role=progressbar]');"
        " return bar && +bar.getAttribute('aria-valuenow') > 0; }",
        arg=sleeper)
    assert bar.count() == 1
    row(page, 'jobs', sleeper).locator('.status-completed').wait_for(
        timeout=60000)

    # Cancel a delayed job from the table, then delete it.
    delayed = addJob(page, 'echo', '"later"', delay=3600)
    row(page, 'jobs', delayed).locator('.status-delayed').wait_for()
    row(page, 'jobs', delayed).locator('[data-action=cancel]').click()
    row(page, 'jobs', delayed).locator('.status-cancelled').wait_for()

    # Filter by status with the count tiles.
    page.click('#counts [data-status=cancelled]')
    page.wait_for_function(
        "document.querySelectorAll('#jobs tbody tr[data-id]').length === 1")
    assert page.locator('#counts [data-status=cancelled] .count-n'
                        ).text_content() == '1'
    row(page, 'jobs', delayed).locator('[data-action=delete]').click()
    page.wait_for_selector('#jobs td.empty')
    page.click('#counts [data-status=""]')

    # A failing job can be retried: a second attempt appears.
    failing = addJob(page, 'fail', '"broken"')
    page.wait_for_selector('#detail-title .status-error')
    assert page.locator('#detail-error').text_content() == 'broken'
    page.locator('#detail-actions [data-action=retry]').click()
    page.wait_for_function(
        "document.querySelectorAll('#detail-attempts tbody tr').length === 2")
    row(page, 'jobs', failing).locator('.status-error').wait_for()

    # Cron jobs: add, edit the schedule, cancel.
    cron = page.locator('#add-cron')
    cron.locator('select[name=task]').select_option('echo')
    cron.locator('select[name=mode]').select_option('interval')
    cron.locator('input[name=interval]').fill('3600')
    cron.locator('button[type=submit]').click()
    page.wait_for_selector('#cronjobs tbody tr[data-id]')
    cronid = int(page.locator('#cronjobs tbody tr[data-id]').first
                 .get_attribute('data-id'))
    assert 'every 3600s' in row(page, 'cronjobs', cronid).text_content()
    row(page, 'cronjobs', cronid).click()
    edit = page.locator('#cron-edit')
    edit.wait_for()
    edit.locator('select[name=mode]').select_option('expression')
    edit.locator('input[name=expression]').fill('*/5 * * * *')
    edit.locator('button[type=submit]').click()
    page.wait_for_selector(
        '#cronjobs tr[data-id="%d"]:has-text("*/5 * * * * (UTC)")' % cronid)
    row(page, 'cronjobs', cronid).locator('[data-action=cancel]').click()
    page.wait_for_selector('#cronjobs td.empty')

    # Clean: completed and cancelled jobs go.
    page.click('#clean button[type=submit]')
    page.wait_for_selector('#toast:has-text("Removed")')
    page.wait_for_function(
        "document.querySelector('#counts [data-status=completed] .count-n')"
        ".textContent === '0'")
    assert row(page, 'jobs', done).count() == 0

    # Stop and start processing.
    page.click('#processing-toggle')
    page.wait_for_selector('#processing-state:has-text("stopped")')
    page.click('#processing-toggle')
    page.wait_for_selector('#processing-state:has-text("processing")')

    assert page.evaluate('window.notReloaded') is True
    page.screenshot(path=str(tmp_path / 'management-page.png'),
                    full_page=True)
    assert errors == []
    page.close()


def test_viewer_sees_no_controls(browser, server):
    page, errors = login(browser, server, 'vic', 'vic-pw')
    page.wait_for_selector('#counts .count')
    assert 'viewer' in page.locator('#user').text_content()
    assert not page.locator('#add-job-card').is_visible()
    assert not page.locator('#processing-toggle').is_visible()
    assert page.locator('#jobs button[data-action]').count() == 0
    page.click('#logout-form button')
    page.wait_for_url('**/login')
    assert errors == []
    page.close()


def test_wrong_password_stays_on_login(browser, server):
    page = browser.new_page()
    page.goto(server + 'login')
    page.fill('#name', 'mia')
    page.fill('#password', 'wrong')
    page.click('#login-button')
    page.wait_for_selector('#login-error:has-text("Wrong user name")')
    assert page.url.endswith('/login')
    page.close()


def apiCall(server, method, path, data=None):
    """A JSON API call as manager "mia" from another client (HTTP Basic)."""
    return testing.apiCall(server, method, path, data, ('mia', 'mia-pw'))


def shownTasks(page):
    return page.eval_on_selector_all(
        '#jobs tbody tr[data-id] td:nth-child(2)',
        'cells => cells.map(c => c.textContent)')


def waitForTasks(page, expected):
    """Wait until the table shows the tasks ``expected`` in that order (a
    page of the previous sort or size may be drawn first; a later poll
    draws the new one)."""
    page.wait_for_function(
        "(expected) => JSON.stringify([...document.querySelectorAll("
        "'#jobs tbody tr[data-id] td:nth-child(2)')].map(c => c.textContent))"
        " === JSON.stringify(expected)", arg=expected)


def test_table_pages_sorts_and_shows_changes_made_elsewhere(browser,
                                                            server):
    page, errors = login(browser, server, 'mia', 'mia-pw')
    page.evaluate('window.notReloaded = true')
    # Jobs another client adds appear without a reload.
    ids = [apiCall(server, 'POST', 'api/jobs', {
        'task': 'sum' if i % 4 == 0 else 'echo', 'input': [i],
        'delay': 3600})['id'] for i in range(13)]
    page.wait_for_function(
        "document.querySelector('#counts [data-status=delayed] .count-n')"
        ".textContent === '13'")
    # Pages of 10: the next page has the other 3.
    page.select_option('#limit', '10')
    page.wait_for_function(
        "document.querySelectorAll('#jobs tbody tr[data-id]').length === 10")
    page.click('#page-next')
    page.wait_for_selector('#page-info:has-text("page 2 · 11–13 of 13")')
    assert page.locator('#jobs tbody tr[data-id]').count() == 3
    page.click('#page-prev')
    page.wait_for_selector('#page-info:has-text("page 1 · 1–10 of 13")')
    # Sorted by task, and the reverse.
    page.select_option('#limit', '50')
    page.select_option('#sort', 'task')
    # (Wait for the page of all 13 in task order: the page of 50 in the
    # old order may be drawn first, and may start with an echo too.)
    waitForTasks(page, ['echo'] * 9 + ['sum'] * 4)
    assert shownTasks(page) == ['echo'] * 9 + ['sum'] * 4
    page.select_option('#sort', '-task')
    waitForTasks(page, ['sum'] * 4 + ['echo'] * 9)
    assert shownTasks(page) == ['sum'] * 4 + ['echo'] * 9
    # A cancel from elsewhere shows; a cancelled cron job is rescheduled
    # from the table.
    apiCall(server, 'POST', 'api/jobs/%d/cancel' % ids[0])
    row(page, 'jobs', ids[0]).locator('.status-cancelled').wait_for()
    cron = apiCall(server, 'POST', 'api/cronjobs',
                   {'task': 'echo', 'interval': 600})['id']
    apiCall(server, 'POST', 'api/jobs/%d/cancel' % cron)
    row(page, 'jobs', cron).locator('.status-cancelled').wait_for()
    row(page, 'jobs', cron).locator('[data-action=reschedule]').click()
    row(page, 'jobs', cron).locator('.status-cronjob').wait_for()
    assert apiCall(server, 'GET', 'api/jobs/%d' % cron)['status'] == \
        'cronjob'
    assert page.evaluate('window.notReloaded') is True
    assert errors == []
    page.close()

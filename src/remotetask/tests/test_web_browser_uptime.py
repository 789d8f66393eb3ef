"""Issue 17 on the management page, in a real headless Chromium against a
real `remotetask serve` process: the retention card (shown, set by a
manager, bad values refused on the page, read-only for a viewer), the
disk-full banner (a real small tmpfs filled up, then freed), and jobs due
at the far ends of the accepted dates (listed, detailed, no script
error)."""
import json
import os
import time
import urllib.error
import urllib.request

import pytest

from remotetask import health, limits
from remotetask.tests.test_uptime_diskfull import (  # noqa: F401  fixture
    fillUp, smalldisk)
from remotetask.tests.test_web_browser import (  # noqa: F401  fixtures
    apiCall, browser, login, row, server, serving)
from remotetask.tests.webhelpers import basic

pytestmark = pytest.mark.browser

#: Waits on the page: long, for a shared machine under load.
LONG = 60000


def watchConsole(page):
    """The console errors of ``page`` (a list that grows)."""
    console = []
    page.on('console', lambda m: console.append(m.text)
            if m.type == 'error' else None)
    return console


def retentionShown(page):
    return page.eval_on_selector(
        '#retention', "form => ['completed', 'error', 'cancelled']"
        ".map(s => form.elements[s].value)")


def waitForRetention(page, values):
    """Wait until the card's three inputs show ``values`` (strings)."""
    page.wait_for_function(
        "(values) => { const form = document.querySelector('#retention');"
        " return JSON.stringify(['completed', 'error', 'cancelled']"
        ".map(s => form.elements[s].value)) === JSON.stringify(values); }",
        arg=values, timeout=LONG)


def storedRetention(server):
    return apiCall(server, 'GET', 'api/retention')['retention']


def saveRetention(page, status, text):
    page.fill('#retention [name=%s]' % status, text)
    page.click('#retention button[type=submit]')


# -- the retention card -------------------------------------------------------

def test_retention_card_shows_and_sets_the_service_retention(browser,
                                                             server):
    # Set elsewhere before the page opens: cancelled kept for ever.
    apiCall(server, 'PUT', 'api/retention', {'cancelled': None})
    page, errors = login(browser, server, 'mia', 'mia-pw')
    console = watchConsole(page)
    waitForRetention(page, ['86400', '604800', ''])
    assert storedRetention(server) == {'completed': 86400, 'error': 604800,
                                       'cancelled': None}
    assert page.locator('#retention [name=cancelled]').get_attribute(
        'placeholder') == 'for ever'
    page.wait_for_selector('#retention-removed:has-text("Removed so far: '
                           '0 by retention")')
    assert page.locator('#retention-error').is_hidden()

    # A manager sets completed to an hour: stored, the others unchanged.
    saveRetention(page, 'completed', '3600')
    page.wait_for_selector('#toast:has-text("Retention saved")',
                           timeout=LONG)
    assert storedRetention(server) == {'completed': 3600, 'error': 604800,
                                       'cancelled': None}
    waitForRetention(page, ['3600', '604800', ''])

    # Bad values: a clear message on the card, nothing stored.
    message = page.locator('#retention-error')
    for text, words in [('-5', ['completed: -5 is negative', '>= 0']),
                        ('abc', ['completed: "abc" is not a number']),
                        ('1e999', ['completed: "1e999" is not a number']),
                        ('12 h', ['completed: "12 h" is not a number'])]:
        saveRetention(page, 'completed', text)
        # (the message of this value, not of the one before)
        page.wait_for_function(
            "(text) => { const box = document.querySelector("
            "'#retention-error'); return !box.hidden && "
            "box.textContent.includes(text); }", arg=words[0], timeout=LONG)
        for word in words:
            assert word in message.text_content(), (text, word)
        assert 'Nothing was saved' in message.text_content()
        assert page.locator('#retention [name=completed]').get_attribute(
            'aria-invalid') == 'true'
        # (what was typed stays, to be corrected)
        assert page.locator('#retention [name=completed]').input_value() \
            == text
        assert storedRetention(server)['completed'] == 3600, text
    # A bad value in another field, beside a good one: nothing stored.
    page.fill('#retention [name=completed]', '60')
    saveRetention(page, 'error', '-1')
    page.wait_for_selector('#retention-error:has-text("error: -1 is '
                           'negative")', timeout=LONG)
    assert storedRetention(server) == {'completed': 3600, 'error': 604800,
                                       'cancelled': None}
    # Corrected: saved, the message goes.
    page.fill('#retention [name=error]', '7200.5')
    page.click('#retention button[type=submit]')
    page.wait_for_selector('#retention-error', state='hidden', timeout=LONG)
    assert storedRetention(server) == {'completed': 60, 'error': 7200.5,
                                       'cancelled': None}
    waitForRetention(page, ['60', '7200.5', ''])
    assert page.locator('#retention [aria-invalid]').count() == 0
    # Emptied: kept for ever.
    saveRetention(page, 'completed', '')
    page.wait_for_function(
        "() => document.querySelector('#retention [name=completed]')"
        ".dataset.shown === ''", timeout=LONG)
    assert storedRetention(server)['completed'] is None
    # What the server refuses shows on the card too (a request altered on
    # its way: the real server's 400).
    page.route('**/api/retention', lambda route: route.continue_(
        post_data=json.dumps({'cancelled': 'a week'}))
        if route.request.method == 'PUT' else route.continue_())
    saveRetention(page, 'cancelled', '60')
    page.wait_for_selector('#retention-error:has-text("the retention of '
                           '\'cancelled\' jobs must be a number of '
                           'seconds")', timeout=LONG)
    assert 'Nothing was saved' in page.locator(
        '#retention-error').text_content()
    assert page.locator('#retention [name=cancelled]').get_attribute(
        'aria-invalid') == 'true'
    assert storedRetention(server)['cancelled'] is None
    page.unroute('**/api/retention')
    # (the browser logs the 400 it got)
    assert errors == [] and [
        text for text in console if '400' not in text] == [], console
    page.close()


def test_viewer_sees_the_retention_card_read_only(browser, server):
    apiCall(server, 'PUT', 'api/retention', {'error': 3600})
    page, errors = login(browser, server, 'vic', 'vic-pw')
    console = watchConsole(page)
    waitForRetention(page, ['86400', '3600', '86400'])
    for status in ('completed', 'error', 'cancelled'):
        field = page.locator('#retention [name=%s]' % status)
        assert field.is_visible()
        assert not field.is_editable(), status
    assert not page.locator('#retention button[type=submit]').is_visible()
    assert storedRetention(server)['error'] == 3600
    assert page.locator('#retention-error').is_hidden()
    assert errors == [] and console == []
    page.close()


# -- the disk-full banner -----------------------------------------------------

def addJob(url, data):
    """POST api/jobs as mia; (status, answer)."""
    request = urllib.request.Request(
        url + 'api/jobs', data=json.dumps(data).encode(), method='POST',
        headers=dict(basic('mia', 'mia-pw'),
                     **{'Content-Type': 'application/json'}))
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.slow
def test_disk_full_banner_comes_and_goes(browser, smalldisk, tmp_path):
    with serving(tmp_path, smalldisk / 'Data.fs',
                 '--pack-interval', 0) as url:
        page, errors = login(browser, url, 'mia', 'mia-pw')
        console = watchConsole(page)
        page.wait_for_selector('#processing-state:text-is("processing")')
        assert addJob(url, {'task': 'echo', 'input': 'before'})[0] == 201
        banner = page.locator('#health-banner')
        assert banner.count() == 0 or banner.is_hidden()

        # The disk fills up: a job added elsewhere is refused, the page
        # says why.
        filler = fillUp(smalldisk, health.RESERVE // 2)
        status, answer = addJob(url, {'task': 'echo', 'input': 'refused'})
        assert status == 503, answer
        banner.wait_for(state='visible', timeout=LONG)
        text = banner.text_content()
        assert 'disk of the database is full' in text
        assert 'No space left on device' in text
        assert banner.get_attribute('role') == 'alert'
        # In view wherever the page is scrolled.
        page.evaluate('window.scrollTo(0, document.body.scrollHeight)')
        page.wait_for_function('window.scrollY > 0')
        box = banner.bounding_box()
        assert 0 <= box['y'] and box['y'] + box['height'] <= 1000, box
        page.screenshot(path=str(tmp_path / 'disk-full.png'))
        # It stays while the disk is full: the page's next health check
        # (every 5 s) says so again.
        with page.expect_response(lambda r: r.url.endswith('api/health'),
                                  timeout=LONG) as health_check:
            pass
        assert health_check.value.json()['disk_full'] is True
        assert banner.is_visible()

        # Space is freed: the banner goes by itself (the next commit that
        # works, a heartbeat of serve's processor, clears the condition),
        # and jobs are taken again.
        os.unlink(str(filler))
        banner.wait_for(state='hidden', timeout=LONG)
        status, answer = addJob(url, {'task': 'echo', 'input': 'after'})
        assert status == 201, answer
        row(page, 'jobs', answer['id']).locator('.status-completed').wait_for(
            timeout=LONG)
        assert errors == [] and console == [], (errors, console)
        page.close()


# -- any date the API accepts -------------------------------------------------

def test_jobs_at_the_far_ends_of_time_are_shown(browser, server):
    now = time.time()
    last = limits.HORIZON - 1      # 9999-12-31T23:59:58Z
    far = {
        'eta': apiCall(server, 'POST', 'api/jobs',
                       {'task': 'echo', 'input': 'eta', 'eta': last})['id'],
        'delay': apiCall(server, 'POST', 'api/jobs', {
            'task': 'echo', 'input': 'delay',
            'delay': limits.HORIZON - now - 86400})['id'],
        'cron-delay': apiCall(server, 'POST', 'api/cronjobs', {
            'task': 'echo', 'input': 'cron',
            'delay': limits.HORIZON - now - 86400})['id'],
    }
    cron = apiCall(server, 'POST', 'api/cronjobs', {
        'task': 'echo', 'input': 'leap', 'expression': '0 0 29 2 *'})['id']
    # Due long ago (epoch 0, and before Date's range: a million
    # centuries), held in a paused queue so that they wait with that eta.
    apiCall(server, 'POST', 'api/pause', {'queue': 'past'})
    past = [apiCall(server, 'POST', 'api/jobs', {
        'task': 'echo', 'input': n, 'eta': eta, 'queue': 'past'})['id']
        for n, eta in enumerate([0, -1e15])]
    stored = apiCall(server, 'GET', 'api/jobs/%d' % far['eta'])
    assert stored['status'] == 'delayed' and stored['eta'] == last
    assert apiCall(server, 'GET', 'api/jobs/%d' % past[1])['eta'] == -1e15

    page, errors = login(browser, server, 'mia', 'mia-pw')
    console = watchConsole(page)
    for jobid in list(far.values()) + [cron] + past:
        row(page, 'jobs', jobid).wait_for(timeout=LONG)
    assert page.locator('#jobs td.empty').count() == 0
    assert page.locator('#jobs tbody tr[data-id]').count() == 6
    for jobid in past:
        assert row(page, 'jobs', jobid).locator('.status-queued').count() \
            == 1
        assert row(page, 'jobs', jobid).locator('td:nth-child(5)'
                                                ).text_content().endswith(
            ' ago')
    assert row(page, 'jobs', past[0]).locator('td:nth-child(5)').get_attribute(
        'title').startswith('1970-01-01')
    # (out of Date's range: the number as it is)
    assert row(page, 'jobs', past[1]).locator('td:nth-child(5)').get_attribute(
        'title') == '-1000000000000000'
    # The queues panel: the paused queue, overdue since long ago.
    overdue = page.locator('#queues tr[data-queue=past] td:nth-child(4)')
    overdue.wait_for(timeout=LONG)
    assert overdue.text_content().endswith('d overdue')
    # The due dates, shown in full on hover, relative in the cell.
    for jobid in far.values():
        due = row(page, 'jobs', jobid).locator('td:nth-child(5)')
        assert due.get_attribute('title').startswith('9999-12-'), jobid
        assert due.text_content().startswith('in '), jobid
    # (a one-off cron job is "delayed" in the jobs' table, tagged cron)
    assert row(page, 'jobs', far['cron-delay']).locator('.tag').text_content(
    ) == 'cron'
    # The cron jobs' table.
    row(page, 'cronjobs', cron).wait_for(timeout=LONG)
    assert '0 0 29 2 * (UTC)' in row(page, 'cronjobs', cron).text_content()
    assert row(page, 'cronjobs', cron).locator('td:nth-child(4)').get_attribute(
        'title')[:4].isdigit()

    # The detail of each renders, with its due date.
    for jobid in list(far.values()) + [cron] + past:
        row(page, 'jobs', jobid).click()
        page.wait_for_selector('#detail-title:has-text("Job %d ")' % jobid,
                               timeout=LONG)
        fields = detailFields(page)
        assert fields['Task'] == 'echo'
        assert fields.get('Created'), fields
        if jobid in far.values():
            assert fields['Due'].startswith('9999-12-'), fields
    assert fields['Due'].startswith('-1000000000000000 ('), fields
    assert fields['Due'].endswith(' ago)'), fields
    # Resumed, they run; their detail shows the end.
    apiCall(server, 'POST', 'api/resume', {'queue': 'past'})
    page.wait_for_selector('#detail-title .status-completed', timeout=LONG)
    page.wait_for_selector('#detail-result:text-is("1")', timeout=LONG)
    assert detailFields(page)['Ended']
    row(page, 'jobs', past[0]).locator('.status-completed').wait_for(
        timeout=LONG)
    row(page, 'jobs', cron).click()
    page.wait_for_selector('#detail-title:has-text("Job %d ")' % cron)
    assert detailFields(page)['Schedule'] == '0 0 29 2 * (UTC)'
    assert page.locator('#cron-edit').is_visible()

    # A page opened on a job's URL shows its detail too.
    page.goto(server + '#/jobs/%d' % far['eta'])
    page.reload()
    page.wait_for_selector('#detail-title:has-text("Job %d ")' % far['eta'],
                           timeout=LONG)
    assert detailFields(page)['Due'].startswith('9999-12-31')
    assert page.locator('#jobs tbody tr[data-id]').count() == 6
    assert errors == [] and console == [], (errors, console)
    page.close()


def detailFields(page):
    """The detail's fields, {label: text}."""
    return dict(zip(page.locator('#detail-fields dt').all_text_contents(),
                    page.locator('#detail-fields dd').all_text_contents()))

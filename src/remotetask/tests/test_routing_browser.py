"""The queues panel and the routing fields of the management page in a
real headless Chromium, against a real `remotetask serve` process."""
import pytest

from remotetask.tests.test_web_browser import (  # noqa: F401  fixtures
    addJob, browser, login, row, server)

pytestmark = pytest.mark.browser


def test_queues_panel(browser, server, tmp_path):
    page, errors = login(browser, server, 'mia', 'mia-pw')
    dialogs = []
    page.on('dialog', lambda dialog: dialogs.append(dialog.message))
    page.wait_for_selector('#processing-state:text-is("processing")')
    page.click('#processing-toggle')        # keep the jobs waiting
    page.wait_for_selector('#processing-state:has-text("stopped")')

    form = page.locator('#add-job')
    form.locator('input[name=queue]').fill('mail')
    form.locator('input[name=priority]').fill('5')
    form.locator('input[name=unique_key]').fill('newsletter')
    first = addJob(page, 'echo', '1')
    assert page.locator('#detail-fields').text_content().count('mail') == 1
    form.locator('input[name=unique_key]').fill('')
    second = addJob(page, 'echo', '2')
    # The same unique key again: nothing added, the holder is shown.
    form.locator('input[name=unique_key]').fill('newsletter')
    form.locator('button[type=submit]').click()
    page.wait_for_selector('#toast:has-text("holds that unique key")')
    tags = row(page, 'jobs', first).locator('.tag')
    assert tags.all_text_contents() == ['mail', '+5']

    mail = page.locator('#queues tr[data-queue=mail]')
    page.wait_for_selector('#queues tr[data-queue=mail] td:nth-child(2)'
                           ':text-is("2")')
    mail.locator('[data-action=pause]').click()
    page.wait_for_selector('#queues tr[data-queue=mail] .paused-state')
    page.wait_for_selector('#paused-summary:has-text("2 waiting jobs '
                           'paused")')

    # The queue filter of the jobs table.
    page.locator('#filter-queue').select_option('mail')
    page.wait_for_function(
        "document.querySelectorAll('#jobs tbody tr[data-id]').length === 2")

    # Purge asks, saying how many.
    mail.locator('[data-action=purge]').click()
    page.wait_for_selector('#toast:has-text("Cancelled 2 jobs")')
    assert dialogs == ['Cancel 2 waiting jobs of queue mail?']
    page.wait_for_selector('#queues tr[data-queue=mail] td:nth-child(2)'
                           ':text-is("0")')
    row(page, 'jobs', second).locator('.status-cancelled').wait_for()
    mail.locator('[data-action=resume]').click()
    page.wait_for_selector('#queues tr[data-queue=mail] td:text-is('
                           '"active")')

    # Retry failed, from the bulk form.
    page.locator('#filter-queue').select_option('')
    page.click('#processing-toggle')
    page.wait_for_selector('#processing-state:has-text("processing")')
    failing = addJob(page, 'fail', '"x"')
    page.wait_for_selector('#detail-title .status-error')
    page.click('#bulk [data-bulk=retry]')
    page.wait_for_selector('#toast:text-is("Queued again 1 job")')
    assert dialogs[-1] == 'Retry 1 failed job of every queue?'
    page.wait_for_function(
        "document.querySelectorAll('#detail-attempts tbody tr').length === 2")
    assert failing
    page.screenshot(path=str(tmp_path / 'queues-panel.png'), full_page=True)
    assert errors == []
    page.close()


def test_bulk_buttons_repeat_the_steps(browser, server):
    """The page repeats a bulk action's bounded steps until the server
    says there is no more, with the cursor of each answer, and shows the
    running total.  (The requests get "limit": 1 on their way, so that
    three jobs take three steps.)"""
    import json
    page, errors = login(browser, server, 'mia', 'mia-pw')
    page.wait_for_selector('#processing-state:text-is("processing")')
    for n in range(3):
        addJob(page, 'fail', '"x%d"' % n)
    page.wait_for_function(
        "document.querySelector('#counts [data-status=error] .count-n')"
        ".textContent === '3'")
    page.click('#processing-toggle')        # no second failure meanwhile
    page.wait_for_selector('#processing-state:has-text("stopped")')
    sent = []

    def oneAtATime(route):
        body = json.loads(route.request.post_data or '{}')
        sent.append(dict(body))
        body['limit'] = 1
        route.continue_(post_data=json.dumps(body))
    page.route('**/api/bulk/retry', oneAtATime)
    page.click('#bulk [data-bulk=retry]')
    page.wait_for_selector('#toast:text-is("Queued again 3 jobs")')
    # The count (the status counters: one answer), then three steps, each
    # after the first with the cursor of the one before.
    assert [b.get('dry_run', False) for b in sent] == [True] + [False] * 3
    assert 'cursor' not in sent[1]
    assert [list(b['cursor']) for b in sent[2:]] == [['error']] * 2
    page.wait_for_function(
        "document.querySelector('#counts [data-status=queued] .count-n')"
        ".textContent === '3'")
    assert errors == []
    page.close()

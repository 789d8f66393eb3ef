"""The page shows a deferred job, what it waits for, and parents and
children as links (headless Chromium against a real `remotetask serve`)."""
import pytest

from remotetask.tests.test_web_browser import (  # noqa: F401  (fixtures)
    addJob, browser, login, row, server)

pytestmark = pytest.mark.browser


def test_deferred_job_on_the_page(browser, server):
    page, errors = login(browser, server, 'mia', 'mia-pw')
    page.wait_for_selector('#processing-state:text-is("processing")')
    parent = addJob(page, 'sleep', '4')
    form = page.locator('#add-job')
    form.locator('input[name=after]').fill(str(parent))
    child = addJob(page, 'echo', '"after"')
    form.locator('input[name=after]').fill('')
    # The child is deferred and says what it waits for, with a link.
    page.wait_for_selector('#detail-title .status-deferred')
    waiting = page.locator('#detail-workflow .waiting')
    assert waiting.text_content() == (
        'Waiting for 1 of 1 parent job: #%d' % parent)
    assert 'deferred' in page.locator('#counts').text_content()
    row(page, 'jobs', child).locator('.status-deferred').wait_for()
    # Following the link shows the parent, which lists its child.
    waiting.locator('a[data-job="%d"]' % parent).click()
    page.wait_for_selector('#detail-title:has-text("Job %d ")' % parent)
    children = page.locator('#detail-workflow .children')
    assert children.text_content() == 'Jobs waiting for it: #%d' % child
    children.locator('a').click()
    page.wait_for_selector('#detail-title:has-text("Job %d ")' % child)
    # Once the parent completed, the child ran.
    page.wait_for_selector('#detail-title .status-completed', timeout=60000)
    assert page.locator('#detail-result').text_content() == 'after'
    assert page.locator('#detail-workflow .parents').text_content() == (
        'Runs after: #%d' % parent)
    assert errors == []
    page.close()

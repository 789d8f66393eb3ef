"""Schemathesis runs the served OpenAPI document as a manager and as a
viewer: no 5xx, every response as the document says (issue 11)."""
import pytest

from remotetask.tests import fuzzapi
from remotetask.tests.webhelpers import basic, exampleDB, usersFile
from remotetask.web import make_app

pytestmark = pytest.mark.slow

#: Examples per operation and mode: enough to reach every status the
#: document lists, few enough for the suite (bench/fuzz_web.py runs more).
EXAMPLES = 6


@pytest.fixture(scope='module')
def server(tmp_path_factory):
    db = exampleDB()
    path, token = usersFile(tmp_path_factory.mktemp('fuzz'))
    with fuzzapi.served(make_app(db, users=path)) as url:
        yield url
    db.close()


@pytest.mark.parametrize('role, name, password', [
    ('manager', 'mia', 'mia-pw'), ('viewer', 'vic', 'vic-pw')])
def test_fuzz_the_served_api(server, role, name, password):
    figures = fuzzapi.fuzz(server, basic(name, password), EXAMPLES,
                           role=role)
    print(figures.line())
    assert figures.failures == []
    assert figures.requests >= figures.operations * 2
    assert not any(status >= 500 for status in figures.statuses)
    assert figures.statuses[200] > 0
    if role == 'viewer':
        assert figures.statuses[403] > 0        # changes refused
    else:
        assert figures.statuses[403] == 0       # a manager may do all

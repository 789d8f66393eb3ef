"""Schemathesis against a served remotetask: the JSON API as its OpenAPI
document (``/api/openapi.json``, fetched from the server) describes it,
fuzzed over HTTP through waitress on loopback.

``fuzz(url, headers, examples)`` runs every operation of the document with
``examples`` generated cases in each of schemathesis's positive (valid per
the document) and negative (invalid) modes, sends them with ``headers``
(the credentials of a role) and checks each response: no 5xx, a status
the document lists, a JSON content type, a body that matches the
document's schema.  It returns the figures of the run (``Figures``) and
the failures found (none, for the run to pass).

Used by ``test_web_fuzz`` (a few examples per operation, so the suite stays
fast) and by ``bench/fuzz_web.py`` (as many as you like)::

    python bench/fuzz_web.py --examples 200
"""
import collections
import contextlib
import threading
import time

import hypothesis
import requests
import schemathesis
from schemathesis import GenerationMode
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.checks import (
    content_type_conformance, not_a_server_error, response_schema_conformance,
    status_code_conformance)

CHECKS = [not_a_server_error, status_code_conformance,
          content_type_conformance, response_schema_conformance]


class Figures:
    """What a run did: requests, statuses, failures, time."""

    def __init__(self, role):
        self.role = role
        self.requests = 0
        self.statuses = collections.Counter()
        self.operations = 0
        self.failures = []
        self.seconds = 0.0

    def line(self):
        return ('%s: %d operations, %d requests in %.1f s, statuses %s, '
                '%d failures' % (self.role, self.operations, self.requests,
                                 self.seconds, dict(sorted(
                                     self.statuses.items())),
                                 len(self.failures)))


def fuzz(url, headers, examples, role='', seed=0):
    """Fuzz the API served at ``url`` (ending in /); see the module."""
    figures = Figures(role)
    session = requests.Session()
    schema = schemathesis.openapi.from_url(url + 'api/openapi.json',
                                           headers=headers)
    started = time.monotonic()
    for result in schema.get_all_operations():
        operation = result.ok()
        figures.operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _run(operation, mode, session, headers, examples, figures, seed)
    figures.seconds = time.monotonic() - started
    return figures


def _run(operation, mode, session, headers, examples, figures, seed):
    @hypothesis.settings(
        max_examples=examples, deadline=None, database=None,
        derandomize=False, phases=[hypothesis.Phase.explicit,
                                   hypothesis.Phase.generate],
        suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.seed(seed)
    @hypothesis.given(case=operation.as_strategy(mode))
    def one(case):
        response = case.call(session=session, headers=headers, timeout=30)
        figures.requests += 1
        figures.statuses[response.status_code] += 1
        try:
            case.validate_response(response, checks=CHECKS)
        except (Failure, FailureGroup) as e:    # keep it, go on
            figures.failures.append('%s (%s): %s %s -> %s: %s' % (
                operation.label, mode.value, case.method,
                case.formatted_path, response.status_code,
                str(e).strip()[:2000]))
    one()


@contextlib.contextmanager
def served(app, threads=4):
    """Serve the WSGI ``app`` with ``remotetask serve``'s waitress server
    on a free loopback port, in a thread; yield its URL."""
    from remotetask.web.server import createServer
    server = createServer(app, '127.0.0.1', 0, threads=threads)
    thread = threading.Thread(target=server.run, name='fuzz-server',
                              daemon=True)
    thread.start()
    try:
        yield 'http://127.0.0.1:%d/' % int(server.effective_port)
    finally:
        server.task_dispatcher.shutdown()
        server.close()
        thread.join(10)

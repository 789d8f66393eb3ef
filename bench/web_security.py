"""Benchmark: the web service's defences, measured (issue 11).

    python bench/web_security.py [--auth 40] [--held 500] [--examples 50]

Serves the example tasks with a users file through ``remotetask serve``'s
waitress server (``remotetask.web.server``) on a free loopback port and
prints, as Markdown:

- HTTP Basic with a wrong password, for a user that exists and for one that
  does not: median and p90 milliseconds over ``--auth`` requests each,
  alternating (throttling off for the measurement, so that every request
  checks the password): the two should be the same (a dummy scrypt check
  for unknown users);
- ``--held`` connections that never finish a request (half sending
  nothing, half an unfinished head), then the time a new client takes to
  get ``/api/me``: 5 samples, before and while they are held;
- schemathesis over the served OpenAPI document with ``--examples`` cases
  per operation and mode, as a manager and as a viewer (0: skip).
"""
import argparse
import http.client
import os
import platform
import socket
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), 'src'))

from remotetask.tests import fuzzapi  # noqa: E402
from remotetask.tests.webhelpers import (  # noqa: E402
    basic, exampleDB, usersFile)
from remotetask.web import make_app  # noqa: E402
from remotetask.web.throttle import Throttle  # noqa: E402


def get(port, headers, path='/api/me'):
    started = time.perf_counter()
    conn = http.client.HTTPConnection('127.0.0.1', port, timeout=60)
    try:
        conn.request('GET', path, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status, (time.perf_counter() - started) * 1000
    finally:
        conn.close()


def quantiles(samples):
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.9)]


def authTimes(port, count):
    known, unknown = [], []
    for i in range(count):
        for name, into in (('mia', known), ('nobody', unknown)):
            status, ms = get(port, basic(name, 'wrong %d' % i))
            assert status == 401, status
            into.append(ms)
    return quantiles(known), quantiles(unknown)


def heldTimes(port, held):
    headers = {'Authorization': basic('mia', 'mia-pw')['Authorization']}
    get(port, headers)      # the password check cached
    before = [get(port, headers)[1] for i in range(5)]
    sockets = []
    try:
        for i in range(held):
            sock = socket.create_connection(('127.0.0.1', port), timeout=10)
            if i % 2:
                sock.sendall(b'GET / HTTP/1.1\r\nHost: localhost\r\nX: ')
            sockets.append(sock)
        during = [get(port, headers)[1] for i in range(5)]
    finally:
        for sock in sockets:
            sock.close()
    return before, during


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--auth', type=int, default=40)
    parser.add_argument('--held', type=int, default=500)
    parser.add_argument('--examples', type=int, default=50)
    args = parser.parse_args()
    db = exampleDB()
    path, token = usersFile(__import__('pathlib').Path(tempfile.mkdtemp()))
    print('Machine: %s, %d cores, Python %s; %s UTC; load average %.2f.\n'
          % (platform.platform(), os.cpu_count(), platform.python_version(),
             time.strftime('%Y-%m-%d %H:%M', time.gmtime()),
             os.getloadavg()[0]))
    quiet = Throttle(free=10 ** 9)
    with fuzzapi.served(make_app(db, users=path, throttle=quiet),
                        threads=8) as url:
        port = int(url.rsplit(':', 1)[1].strip('/'))
        (k50, k90), (u50, u90) = authTimes(port, args.auth)
        print('| Basic, wrong password (%d each) | median ms | p90 ms |\n'
              '|---|---|---|\n| user exists | %.1f | %.1f |\n'
              '| no such user | %.1f | %.1f |\n| ratio unknown/known | '
              '%.2f | |\n' % (args.auth, k50, k90, u50, u90, u50 / k50))
        before, during = heldTimes(port, args.held)
        print('GET /api/me by a new client (ms, 5 samples): %s before, '
              '%s while %d connections are held open unfinished.\n' % (
                  ', '.join('%.1f' % ms for ms in before),
                  ', '.join('%.1f' % ms for ms in during), args.held))
        if args.examples:
            for role, name in (('manager', 'mia'), ('viewer', 'vic')):
                figures = fuzzapi.fuzz(url, basic(name, name + '-pw'),
                                       args.examples, role=role)
                print('- schemathesis, %d examples per operation and mode, '
                      '%s' % (args.examples, figures.line()))
                for failure in figures.failures:
                    print('  - ' + failure[:300].replace('\n', ' '))
    db.close()


if __name__ == '__main__':
    main()

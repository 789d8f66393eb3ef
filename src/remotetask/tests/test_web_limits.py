"""No denial of service before authentication: a real ``remotetask serve``
held by clients that never finish a request still serves others (issue 11,
the row "110 connections sending an unfinished request header")."""
import http.client
import socket
import subprocess
import time

import pytest

from remotetask import testing

pytestmark = pytest.mark.slow


def startServe(tmp_path, *options):
    port = testing.freePort()
    log = open(str(tmp_path / 'serve.log'), 'wb')
    proc = subprocess.Popen(
        testing.remotetaskCommand('serve', '--db', tmp_path / 'Data.fs',
                                  '--port', port, '--no-processing',
                                  *options),
        stdout=log, stderr=subprocess.STDOUT, env=testing.subprocessEnv(),
        cwd=str(tmp_path))
    try:
        testing.waitForPort(port, 60, proc=proc)
    except Exception:
        testing.stopProcess(proc)
        raise
    return proc, port, log


def hold(port, count):
    """``count`` connections that never finish a request: half of them
    send nothing, half an unfinished request head."""
    held = []
    for i in range(count):
        sock = socket.create_connection(('127.0.0.1', port), timeout=10)
        if i % 2:
            sock.sendall(b'GET /api/me HTTP/1.1\r\nHost: localhost\r\n'
                         b'X-Slow: ')
        held.append(sock)
    return held


def timedGet(port, path='/api/me', timeout=30):
    """(status, seconds) of one GET by a new client."""
    started = time.monotonic()
    conn = http.client.HTTPConnection('127.0.0.1', port, timeout=timeout)
    try:
        conn.request('GET', path, headers={'Host': 'localhost'})
        response = conn.getresponse()
        response.read()
        return response.status, time.monotonic() - started
    finally:
        conn.close()


def isClosed(sock, wait):
    """True if the server closed ``sock`` within ``wait`` seconds."""
    sock.settimeout(wait)
    try:
        return sock.recv(1024) == b''
    except socket.timeout:
        return False
    except ConnectionResetError:
        return True


def test_500_held_connections_do_not_shut_out_a_new_client(tmp_path):
    proc, port, log = startServe(tmp_path)
    held = []
    try:
        held = hold(port, 500)
        # Each new client is served; the contract is "within a second",
        # the test leaves room for a loaded machine (before the change
        # none was served at all while the connections were held).
        timings = [timedGet(port, timeout=10) for i in range(5)]
        assert all(status == 200 for status, seconds in timings), timings
        assert min(seconds for status, seconds in timings) < 1.0, timings
        assert proc.poll() is None
    finally:
        for sock in held:
            sock.close()
        assert testing.stopProcess(proc) == 0     # not killed (see below)
        log.close()


def test_unfinished_requests_are_closed_after_the_request_timeout(tmp_path):
    proc, port, log = startServe(tmp_path, '--connection-limit', 40,
                                 '--request-timeout', 2,
                                 '--channel-timeout', 2)
    held = []
    try:
        # The connection limit is full of clients that never finish.
        held = hold(port, 40)
        # One sends a byte every half second: busy, but never done.
        drip = held[1]
        deadline = time.monotonic() + 30
        closed = False
        while time.monotonic() < deadline and not closed:
            try:
                drip.sendall(b'x')
            except OSError:
                closed = True
                break
            closed = isClosed(drip, 0.5)
        assert closed, 'a dripping request head was never closed'
        # The others are closed as well, soon after the timeout...
        assert all(isClosed(sock, 20) for sock in held)
        # ... and a new client is served.
        status, seconds = timedGet(port)
        assert status == 200
        assert proc.poll() is None
    finally:
        for sock in held:
            sock.close()
        testing.stopProcess(proc)
        log.close()
    assert b'Traceback' not in (tmp_path / 'serve.log').read_bytes()


def test_waitress_own_errors_say_nosniff_too(tmp_path):
    proc, port, log = startServe(tmp_path)
    try:
        with socket.create_connection(('127.0.0.1', port), timeout=30) as s:
            s.sendall(b'GET /api/me HTTP/1.1\r\nHost: localhost\r\n'
                      b'Bad Header\r\n\r\n')
            answer = b''
            while b'\r\n\r\n' not in answer:
                chunk = s.recv(4096)
                if not chunk:
                    break
                answer += chunk
        head = answer.split(b'\r\n\r\n')[0].lower()
        assert head.split(b' ')[1] == b'400'
        assert b'x-content-type-options: nosniff' in head
    finally:
        # SIGTERM while waitress closes that connection: its handler runs
        # inside waitress's, which used to swallow the stop (serve ran on
        # until stopProcess killed it after 30 s, exit -9).
        assert testing.stopProcess(proc) == 0
        log.close()

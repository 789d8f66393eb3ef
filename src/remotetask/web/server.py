"""The HTTP server of ``remotetask serve``: waitress, with limits that keep
clients that never finish a request from shutting others out.

Waitress closes a connection that has been idle for ``channel_timeout``
seconds (between requests: keep-alive), but counts every byte received as
activity and has no deadline for the request itself: a client that sends a
header one byte at a time, or connects and sends nothing, holds its
connection for as long as it likes, and ``connection_limit`` of them shut
everybody else out.  Here a connection must deliver a whole request (head
and body) within ``request_timeout`` seconds of connecting or of the
request's first byte (``Channel``); the connection limit is high enough to
ride out a burst of such connections until they are closed, and the
process's limit of open files is raised to match.  Waitress waits for
sockets with ``poll()``, so descriptors past 1024 work.

These limits bound what one client can hold; they do not make waitress an
internet-facing server: on a public network put a reverse proxy in front
(see the README's security section).
"""
import logging
import resource
import time

import waitress.server
from waitress.channel import HTTPChannel
from waitress.task import ErrorTask

from remotetask.web.guard import HEADERS

log = logging.getLogger('remotetask.web')

#: Defaults of ``remotetask serve``'s options (seconds, connections).
CONNECTION_LIMIT = 1000
CHANNEL_TIMEOUT = 30
REQUEST_TIMEOUT = 15

#: Files a process needs besides its connections (database, logs, ...).
SPARE_FILES = 64

#: The headers a trusted proxy may set (with ``--trusted-proxy``).
PROXY_HEADERS = {'x-forwarded-for', 'x-forwarded-host', 'x-forwarded-proto',
                 'x-forwarded-port'}


class _ErrorTask(ErrorTask):
    """Waitress's own error responses (a malformed request line, a header
    too large...) carry the headers every response of ours has."""

    def execute(self):
        self.response_headers.extend(HEADERS)
        super().execute()


class Channel(HTTPChannel):
    """Waitress's channel with a deadline for a whole request.

    ``began`` is when the first byte of the request being read arrived.
    The asyncore loop asks every channel ``readable()`` on each turn (at
    least once a second): a channel still waiting for its first request
    ``request_timeout`` after it connected, or for the rest of a request
    that long after its first byte, is closed.  Idle keep-alive connections
    (between requests) are waitress's ``channel_timeout``'s.
    """

    began = None
    error_task_class = _ErrorTask

    def received(self, data):
        if data and self.request is None and not self.will_close:
            self.began = time.time()
        return super().received(data)

    def readable(self):
        if not self.requests and not self.will_close:
            if self.request is not None:
                since = self.began
            elif self.began is None:
                since = self.creation_time
            else:
                since = None
            if since is not None and time.time() - since > \
                    self.server.request_timeout:
                self.will_close = True
        return super().readable()


def raiseFileLimit(needed):
    """Raise the soft limit of open files to ``needed`` if the hard limit
    allows; return the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY \
            else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as e:
            log.warning('could not raise the limit of open files to %d: %s',
                        target, e)
    return soft


def createServer(app, host, port, threads=8, max_body=None,
                 connection_limit=CONNECTION_LIMIT,
                 channel_timeout=CHANNEL_TIMEOUT,
                 request_timeout=REQUEST_TIMEOUT, trusted_proxy=None):
    """A waitress server for ``app`` with the limits above.

    ``trusted_proxy``: the address of a reverse proxy whose
    ``X-Forwarded-*`` headers are believed (the client's address then
    comes from ``X-Forwarded-For``: login throttling needs it).  Raises
    ``ValueError`` for limits that can not work.
    """
    if connection_limit < 1 or channel_timeout < 1 or request_timeout < 1:
        raise ValueError('connection_limit, channel_timeout and '
                         'request_timeout must be at least 1')
    files = raiseFileLimit(connection_limit + threads + SPARE_FILES)
    if files != resource.RLIM_INFINITY and \
            files < connection_limit + SPARE_FILES:
        log.warning('the limit of open files (%d) is below the connection '
                    'limit (%d): connections past it are refused by the '
                    'system', files, connection_limit)
    kw = {}
    if max_body is not None:
        kw['max_request_body_size'] = max_body
    if trusted_proxy:
        kw.update(trusted_proxy=trusted_proxy, trusted_proxy_count=1,
                  trusted_proxy_headers=PROXY_HEADERS,
                  clear_untrusted_proxy_headers=True)
    socketmap = {}
    server = waitress.server.create_server(
        app, map=socketmap, host=host, port=port, threads=threads,
        ident='remotetask', connection_limit=connection_limit,
        channel_timeout=channel_timeout,
        cleanup_interval=max(1, min(5, channel_timeout // 2)),
        asyncore_use_poll=True, **kw)
    for dispatcher in list(socketmap.values()):
        if isinstance(dispatcher, waitress.server.BaseWSGIServer):
            dispatcher.channel_class = Channel
            dispatcher.request_timeout = request_timeout
            dispatcher.handle_accept = _acceptMany(dispatcher)
    return server


#: Connections accepted per turn of the loop when many wait.
ACCEPT_BATCH = 64


def _acceptMany(dispatcher):
    """Waitress's ``handle_accept`` accepts one connection per turn of its
    loop, and a turn asks every open connection whether it is readable: a
    burst of hundreds of connections then keeps the next client waiting
    for hundreds of turns.  This accepts up to ``ACCEPT_BATCH`` a turn
    (until none waits, or the connection limit is reached)."""
    accept = dispatcher.handle_accept

    def handle_accept():
        for i in range(ACCEPT_BATCH):
            before = len(dispatcher._map)
            accept()
            if len(dispatcher._map) == before or \
                    len(dispatcher._map) >= dispatcher.adj.connection_limit:
                return
    return handle_accept

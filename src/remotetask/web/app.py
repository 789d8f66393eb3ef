"""The WSGI application: Pyramid, pyramid_tm and one ZODB connection per
request.

``make_app(db, service_name)`` builds it.  Each request (each attempt, when
pyramid_retry runs it again after a conflict) gets its own explicit
``transaction.TransactionManager`` from pyramid_tm and a connection opened
on it (``request.service`` opens it on first use and closes it when the
request is finished).  pyramid_tm commits when the view returns and aborts
when it raises, so the service methods, which never commit by themselves,
run exactly as in any other transaction.
"""
import logging
import os

from pyramid.config import Configurator
from pyramid.httpexceptions import HTTPForbidden, HTTPFound
from pyramid.session import SignedCookieSessionFactory
from pyramid.tweens import EXCVIEW

from remotetask import db as dbmod
from remotetask.web.auth import SecurityPolicy, Users, needsCSRF

log = logging.getLogger('remotetask.web')

#: Largest request body accepted (bytes); larger ones get 413.
MAX_BODY = 1024 * 1024
SAFE_METHODS = ('GET', 'HEAD', 'OPTIONS')


class WebService:
    """What the views need: the database, the service name, the users and
    the processor of this process (or None)."""

    def __init__(self, db, service_name, users, processor):
        self.db = db
        self.service_name = service_name
        self.users = users
        self.processor = processor

    @property
    def anonymous(self):
        return self.users is None


def make_app(db, service_name=dbmod.DEFAULT_SERVICE, users=None,
             processor=None, max_body=MAX_BODY, secret=None, settings=None):
    """The WSGI application serving the service ``service_name`` of ``db``.

    ``users``: a ``Users`` or the path of a users file; None allows
    anonymous use from loopback addresses only (see ``auth``).
    ``processor``: the ``IProcessor`` of this process, started and stopped
    by the API; None if jobs are processed elsewhere.  ``secret`` signs the
    session cookies (default: random, so sessions end with the process).
    """
    if isinstance(users, str):
        users = Users(users)
    dbmod.ensureService(db, service_name)
    config = Configurator(settings=dict(
        {'tm.manager_hook': 'pyramid_tm.explicit_manager',
         'retry.attempts': 3}, **(settings or {})))
    config.registry.remotetask = WebService(db, service_name, users,
                                            processor)
    config.include('pyramid_retry')
    config.include('pyramid_tm')
    config.set_security_policy(SecurityPolicy(users))
    config.set_session_factory(SignedCookieSessionFactory(
        secret or os.urandom(32).hex(), cookie_name='remotetask_session',
        httponly=True, samesite='Strict', timeout=8 * 3600,
        reissue_time=600))
    config.set_default_csrf_options(require_csrf=True, token='csrf_token',
                                    header='X-CSRF-Token',
                                    callback=needsCSRF)
    config.add_request_method(openService, 'service', reify=True)
    config.add_tween('remotetask.web.app.crossSiteTween', under=EXCVIEW)
    config.add_forbidden_view(forbidden)
    config.include('remotetask.web.api')
    config.include('remotetask.web.xmlrpc')
    config.include('remotetask.web.metrics')
    config.include('remotetask.web.ui')
    config.include('remotetask.web.uptime')
    return BodyLimit(config.make_wsgi_app(), max_body)


def openService(request):
    """``request.service``: the service, in a connection opened on the
    request's transaction manager and closed when the request ends."""
    web = request.registry.remotetask
    conn = web.db.open(transaction_manager=request.tm)
    request.add_finished_callback(lambda request: conn.close())
    return dbmod.getService(conn, web.service_name)


def wakeAfterCommit(request):
    """Wake the processor of this process once the request's transaction
    has committed (new jobs may be due)."""
    processor = request.registry.remotetask.processor
    if processor is None:
        return

    def hook(committed):
        if committed:
            processor.wake()
    request.tm.get().addAfterCommitHook(hook)


def isCrossSite(request):
    """True if a browser says the request comes from another site."""
    fetch_site = request.headers.get('Sec-Fetch-Site')
    if fetch_site is not None:
        return fetch_site not in ('same-origin', 'none')
    origin = request.headers.get('Origin')
    if origin is None:
        return False
    return origin.rstrip('/') != request.host_url


def crossSiteTween(handler, registry):
    """Refuse requests that change something when a browser marks them as
    made by another site (see ``auth``)."""
    def tween(request):
        if request.method not in SAFE_METHODS and isCrossSite(request):
            raise HTTPForbidden('cross-site request refused (Origin %r)'
                                % request.headers.get('Origin'))
        return handler(request)
    return tween


def wantsJSON(request):
    return request.path_info.startswith('/api/')


def forbidden(exc, request):
    """401 when nobody is authenticated, 403 when someone is but may not."""
    identity = request.identity
    web = request.registry.remotetask
    denied = getattr(exc, 'result', None)
    if denied is None and exc.detail:
        status, message = 403, str(exc.detail)
    elif identity is None:
        if request.method == 'GET' and request.path_info == '/' \
                and not web.anonymous:
            return HTTPFound(location=request.route_url('login'))
        status = 401
        if web.anonymous:
            message = ('anonymous use is allowed from loopback addresses, '
                       'to a loopback host name, only')
        else:
            message = ('authentication required: HTTP Basic, a bearer '
                       'token or the login form')
    else:
        status = 403
        message = 'a %s may not do this (only a manager may)' % (
            identity['role'],)
    response = request.response
    response.status_int = status
    if wantsJSON(request):
        response.content_type = 'application/json'
        response.json_body = {'error': message, 'status': status}
    else:
        response.content_type = 'text/plain'
        response.text = message + '\n'
    if status == 401 and not web.anonymous \
            and request.headers.get('X-Requested-With') != 'remotetask':
        response.headers['WWW-Authenticate'] = 'Basic realm="remotetask"'
    return response


class BodyLimit:
    """WSGI middleware: 413 for bodies over ``limit`` bytes, 400 for a bad
    Content-Length, before anything reads the body."""

    def __init__(self, app, limit):
        self.app = app
        self.limit = limit

    def __call__(self, environ, start_response):
        try:
            length = int(environ.get('CONTENT_LENGTH') or 0)
        except ValueError:
            return self._refuse(start_response, '400 Bad Request',
                                'bad Content-Length header')
        if length > self.limit:
            return self._refuse(
                start_response, '413 Request Entity Too Large',
                'request body of %d bytes is over the limit of %d bytes'
                % (length, self.limit))
        return self.app(environ, start_response)

    @staticmethod
    def _refuse(start_response, status, message):
        body = (message + '\n').encode('utf-8')
        start_response(status, [('Content-Type', 'text/plain; charset=utf-8'),
                                ('Content-Length', str(len(body)))])
        return [body]

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
from pyramid.exceptions import BadCSRFToken
from pyramid.httpexceptions import HTTPError, HTTPForbidden, HTTPFound
from pyramid.session import SignedCookieSessionFactory
from pyramid.tweens import EXCVIEW

from remotetask import db as dbmod
from remotetask.web import sessions as sessionsmod
from remotetask.web.auth import SecurityPolicy, Users, needsCSRF
from remotetask.web.guard import MAX_BODY, Guard
from remotetask.web.throttle import Throttle

log = logging.getLogger('remotetask.web')

SAFE_METHODS = ('GET', 'HEAD', 'OPTIONS')


class WebService:
    """What the views need: the database, the service name, the users and
    the processor of this process (or None)."""

    def __init__(self, db, service_name, users, processor, sessions=None,
                 throttle=None):
        self.db = db
        self.service_name = service_name
        self.users = users
        self.processor = processor
        self.sessions = sessions
        self.throttle = throttle

    @property
    def anonymous(self):
        return self.users is None


def make_app(db, service_name=dbmod.DEFAULT_SERVICE, users=None,
             processor=None, max_body=MAX_BODY, secret=None, settings=None,
             session_idle=sessionsmod.IDLE, session_max=sessionsmod.MAXIMUM,
             throttle=None, secure_cookies=False):
    """The WSGI application serving the service ``service_name`` of ``db``.

    ``users``: a ``Users`` or the path of a users file; None allows
    anonymous use from loopback addresses only (see ``auth``).
    ``processor``: the ``IProcessor`` of this process, started and stopped
    by the API; None if jobs are processed elsewhere.  ``secret`` signs the
    session cookies (default: random).  Login sessions are kept by this
    process (``sessions``): they end after ``session_idle`` seconds
    without a request, ``session_max`` seconds after the login, at logout
    and when the process ends.  ``throttle``: the ``Throttle`` of failed
    logins (default: a new one).  ``secure_cookies``: send the session
    cookie over HTTPS only (behind a TLS proxy).
    """
    if isinstance(users, str):
        users = Users(users)
    dbmod.ensureService(db, service_name)
    config = Configurator(settings=dict(
        {'tm.manager_hook': 'pyramid_tm.explicit_manager',
         'retry.attempts': 3}, **(settings or {})))
    sessions = sessionsmod.Sessions(idle=session_idle, maximum=session_max)
    throttle = Throttle() if throttle is None else throttle
    config.registry.remotetask = WebService(db, service_name, users,
                                            processor, sessions, throttle)
    config.registry.remotetask.max_body = max_body
    config.include('pyramid_retry')
    config.include('pyramid_tm')
    config.set_security_policy(SecurityPolicy(users, sessions, throttle))
    # The cookie holds the session id and the CSRF token; who is logged in
    # is kept by the server (``sessions``).
    config.set_session_factory(SignedCookieSessionFactory(
        secret or os.urandom(32).hex(), cookie_name='remotetask_session',
        httponly=True, samesite='Strict', secure=bool(secure_cookies),
        timeout=session_max, reissue_time=min(600, session_idle / 2)))
    config.set_default_csrf_options(require_csrf=True, token='csrf_token',
                                    header='X-CSRF-Token',
                                    callback=needsCSRF)
    config.add_request_method(openService, 'service', reify=True)
    config.add_tween('remotetask.web.app.crossSiteTween', under=EXCVIEW)
    config.add_forbidden_view(forbidden)
    config.add_exception_view(httpError, context=HTTPError)
    config.include('remotetask.web.api')
    config.include('remotetask.web.xmlrpc')
    config.include('remotetask.web.metrics')
    config.include('remotetask.web.ui')
    config.include('remotetask.web.uptime')
    config.include('remotetask.web.stats')
    return Guard(config.make_wsgi_app(), max_body)


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


def errorResponse(request, status, message):
    """An error as JSON ``{"error": message, "status": status}``: never
    HTML or text that could echo markup from the URL."""
    response = request.response
    response.status_int = status
    response.content_type = 'application/json'
    response.json_body = {'error': message, 'status': status}
    return response


def httpMessage(exc):
    """The message of an HTTP error raised by a view or by Pyramid."""
    if isinstance(exc, BadCSRFToken):
        return ('bad or missing CSRF token: send the session\'s token (the '
                'csrf_token of /api/me) in an X-CSRF-Token header, or the '
                'login form\'s csrf_token field')
    return str(exc.detail or exc.explanation)


def httpError(exc, request):
    """Errors outside /api/ and /RPC2 (404 of an unknown URL, 400 of a
    bad CSRF token...): JSON as well."""
    status = exc.status_int
    allowed = allowedMethods(exc, request)
    if allowed:
        status = 405
        message = '%s is not allowed on %s (allowed: %s)' % (
            request.method, request.path, ', '.join(allowed))
    elif status == 404:
        message = 'no such URL: %s %s' % (request.method, request.path)
    else:
        message = httpMessage(exc)
    response = errorResponse(request, status, message)
    if allowed:
        response.headers['Allow'] = ', '.join(allowed)
    for header in ('Allow', 'Retry-After'):
        if header in exc.headers:
            response.headers[header] = exc.headers[header]
    return response


def allowedMethods(exc, request):
    """The methods a known URL answers, when ``exc`` says that none of its
    views took the request's method (Pyramid's ``PredicateMismatch``, a
    404), so that the answer is 405 with ``Allow``; else None."""
    from pyramid.exceptions import PredicateMismatch
    route = getattr(request, 'matched_route', None)
    if not isinstance(exc, PredicateMismatch) or route is None:
        return None
    introspector = request.registry.introspector
    intr = introspector.get('routes', route.name)
    if intr is None:
        return None
    methods = set()
    for related in introspector.related(intr):
        if related.category_name != 'views':
            continue
        found = related.get('request_methods')
        if found is None:          # a view for every method: not a 405
            return None
        methods.update([found] if isinstance(found, str) else found)
    if not methods or request.method in methods:
        return None                # another predicate did not match
    if 'GET' in methods:
        methods.add('HEAD')
    return sorted(methods)


def forbidden(exc, request):
    """401 when nobody is authenticated, 403 when someone is but may not,
    429 while failed logins back off."""
    identity = request.identity
    web = request.registry.remotetask
    denied = getattr(exc, 'result', None)
    retry = request.environ.get('remotetask.throttled')
    if denied is None and exc.detail:
        status, message = 403, str(exc.detail)
    elif identity is None and retry:
        response = errorResponse(
            request, 429, 'too many failed logins from this address or for '
            'this user name: try again in %d s' % retry)
        response.headers['Retry-After'] = str(retry)
        return response
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
    response = errorResponse(request, status, message)
    if status == 401 and not web.anonymous \
            and request.headers.get('X-Requested-With') != 'remotetask':
        response.headers['WWW-Authenticate'] = 'Basic realm="remotetask"'
    return response

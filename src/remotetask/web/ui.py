"""The management page (/), the login form and the static files.

The page is plain HTML; ``static/app.js`` fills it from the JSON API and
polls it every second.  It sends the session's CSRF token (from
``/api/me``) in an ``X-CSRF-Token`` header with every change.
"""
import html
import os
import string

from pyramid.csrf import check_csrf_token
from pyramid.httpexceptions import HTTPFound, HTTPSeeOther
from pyramid.interfaces import ISecurityPolicy
from pyramid.response import Response
from pyramid.security import forget, remember

from remotetask.web.auth import VIEW

HERE = os.path.dirname(os.path.abspath(__file__))


def _template(name):
    with open(os.path.join(HERE, 'templates', name), encoding='utf-8') as f:
        return string.Template(f.read())


def includeme(config):
    config.add_route('index', '/')
    config.add_route('login', '/login')
    config.add_route('logout', '/logout')
    config.add_static_view('static', 'remotetask.web:static',
                           cache_max_age=60)
    config.add_view(index, route_name='index', request_method='GET',
                    permission=VIEW)
    config.add_view(loginForm, route_name='login', request_method='GET')
    config.add_view(login, route_name='login', request_method='POST',
                    require_csrf=False)
    config.add_view(logout, route_name='logout', request_method='POST',
                    require_csrf=False)


def _page(body, status=200):
    response = Response(body=body.encode('utf-8'), status=status,
                        content_type='text/html', charset='utf-8')
    response.headers.update({
        'X-Frame-Options': 'DENY', 'Cache-Control': 'no-store',
        'Content-Security-Policy':
            "default-src 'self'; frame-ancestors 'none'"})
    return response


def index(request):
    web = request.registry.remotetask
    return _page(_template('index.html').substitute(
        service=html.escape(web.service_name),
        static=html.escape(request.static_url('remotetask.web:static/'))))


def _loginPage(request, message='', status=200):
    return _page(_template('login.html').substitute(
        message=html.escape(message),
        csrf_token=html.escape(request.session.get_csrf_token()),
        static=html.escape(request.static_url('remotetask.web:static/')),
        action=html.escape(request.route_url('login'))), status)


def loginForm(request):
    if request.registry.remotetask.anonymous:
        return HTTPFound(location=request.route_url('index'))
    return _loginPage(request)


def login(request):
    """Check the CSRF token and the credentials (throttled: see
    ``throttle``); start a new server-side session."""
    web = request.registry.remotetask
    if web.anonymous:
        return HTTPFound(location=request.route_url('index'))
    check_csrf_token(request, token='csrf_token', header=None)
    name = request.POST.get('name', '')
    password = request.POST.get('password', '')
    policy = request.registry.getUtility(ISecurityPolicy)
    found = policy.check(request, name, password)
    retry = request.environ.get('remotetask.throttled')
    if retry:
        response = _loginPage(request, 'Too many failed logins: try again '
                              'in %d seconds.' % retry, 429)
        response.headers['Retry-After'] = str(retry)
        return response
    if found is None:
        return _loginPage(request, 'Wrong user name or password.', 401)
    headers = remember(request, found[0])
    return HTTPSeeOther(location=request.route_url('index'), headers=headers)


def logout(request):
    """End the session on the server (its cookie is worth nothing after
    this, even replayed) and in the browser."""
    check_csrf_token(request, token='csrf_token', header='X-CSRF-Token')
    headers = forget(request)
    return HTTPSeeOther(location=request.route_url('login'), headers=headers)

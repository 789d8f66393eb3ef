"""The context a job of a site's service runs in: the site, a request and,
in Zope 2-style applications, a user.

``SiteContext(path, user, serverURL)`` is the ``around`` hook of the
processors that ``remotetask.zope.autostart`` starts (see
``remotetask.processor.Processor``): around each run of a job it

- finds the application's root folder in the worker's connection (the
  database root's ``Application``) and the site at ``path`` in it;
- in a Zope 2-style application (OFS, Acquisition: Zope 5, Plone 6): wraps
  the application in a request of its own (``REQUEST``, and
  ``zope.globalrequest.getRequest()``), so that acquisition,
  ``absolute_url()`` and code that wants a request work, and makes
  ``user`` (if given) the authenticated user of a new AccessControl
  security manager;
- sets the site (``zope.component.hooks.setSite``): the site's local
  utilities are found with ``getUtility``/``queryUtility`` and
  ``getSite()`` returns it;

and after the run ends the security manager, closes the request and puts
the previous site back, whatever the job did.

A site or a user that can not be found makes the job fail with an
``ApplicationContextError`` naming it.
"""
import contextlib
import io
from urllib.parse import urlsplit

from zope.component.hooks import getSite, setSite

from remotetask.interfaces import RemoteTaskError

#: The key of the application's root folder in the database root (Zope 2
#: and zope.app.publication both use it).
ROOT_NAME = 'Application'


class ApplicationContextError(RemoteTaskError, LookupError):
    """The root folder, a site or a user named by the configuration can not
    be found."""


def isZope2(obj):
    """True for an Acquisition-aware (OFS) object."""
    try:
        from Acquisition.interfaces import IAcquirer
    except ImportError:
        return False
    return IAcquirer.providedBy(obj)


def rootFolder(conn):
    """The application's root folder in ``conn``."""
    root = conn.root().get(ROOT_NAME)
    if root is None:
        raise ApplicationContextError(
            'the database has no %r at its root: it is not the database of '
            'a Zope application' % ROOT_NAME)
    return root


def makeRequest(app, serverURL='http://localhost:8080'):
    """``app`` wrapped in a new Zope request for ``serverURL``; returns the
    wrapped application and the request."""
    from ZPublisher.BaseRequest import RequestContainer
    from ZPublisher.HTTPRequest import HTTPRequest
    from ZPublisher.HTTPResponse import HTTPResponse
    url = urlsplit(serverURL)
    https = url.scheme == 'https'
    environ = {
        'SERVER_NAME': url.hostname,
        'SERVER_PORT': str(url.port or (443 if https else 80)),
        'REQUEST_METHOD': 'GET',
        'SERVER_PROTOCOL': 'HTTP/1.1',
        'wsgi.url_scheme': url.scheme,
    }
    if https:
        environ['HTTPS'] = 'on'
    response = HTTPResponse(stdout=io.BytesIO())
    request = HTTPRequest(io.BytesIO(), environ, response)
    request._steps = ['noobject']
    request['PARENTS'] = [app]
    return app.__of__(RequestContainer(REQUEST=request)), request


def _notFound():
    errors = (KeyError, AttributeError, LookupError)
    try:
        from zExceptions import NotFound
    except ImportError:
        return errors
    return errors + (NotFound,)


def traverse(root, path):
    """The object at ``path`` (a tuple of names) below ``root``."""
    obj = root
    for i, name in enumerate(path):
        try:
            if isZope2(obj):
                obj = obj.unrestrictedTraverse(name)
            else:
                obj = obj[name]
        except _notFound():
            parent = ('%r' % '/'.join(path[:i]) if i else 'the root folder')
            raise ApplicationContextError(
                'site %r not found: %s has no %r'
                % ('/'.join(path), parent, name))
    return obj


def findUser(context, userid):
    """The user ``userid`` of the first user folder (``acl_users``) that
    knows it, from ``context`` up to the root, wrapped in that folder; or
    None."""
    from Acquisition import aq_base, aq_inner, aq_parent
    obj = context
    while obj is not None:
        if getattr(aq_base(obj), 'acl_users', None) is not None:
            folder = obj.acl_users
            user = folder.getUserById(userid)
            if user is None and hasattr(aq_base(folder), 'getUser'):
                user = folder.getUser(userid)    # a login name
            if user is not None:
                if aq_base(user) is user:
                    user = user.__of__(folder)
                return user
        obj = aq_parent(aq_inner(obj))
    return None


@contextlib.contextmanager
def zope2Context(root, path, userid=None, serverURL='http://localhost:8080'):
    """The site at ``path`` of a Zope 2 application ``root`` (unwrapped),
    in a request, with ``userid``'s security manager; yields the site."""
    from AccessControl.SecurityManagement import (
        newSecurityManager, noSecurityManager)
    from zope.globalrequest import getRequest, setRequest
    app, request = makeRequest(root, serverURL)
    previousRequest = getRequest()
    setRequest(request)
    try:
        site = traverse(app, path)
        if userid is not None:
            user = findUser(site, userid)
            if user is None:
                raise ApplicationContextError(
                    'user %r not found in the acl_users of %s or above'
                    % (userid, ('site %r' % '/'.join(path)) if path
                       else 'the root folder'))
            newSecurityManager(request, user)
        try:
            yield site
        finally:
            noSecurityManager()
    finally:
        setRequest(previousRequest)
        request.close()


class SiteContext:
    """See the module: an ``around(service, job)`` hook for processors."""

    def __init__(self, path=(), user=None, serverURL='http://localhost:8080'):
        self.path = tuple(path)
        self.user = user
        self.serverURL = serverURL

    def __repr__(self):
        return '<SiteContext /%s user=%r>' % ('/'.join(self.path), self.user)

    def __call__(self, service, job=None):
        return self.open(service._p_jar)

    @contextlib.contextmanager
    def open(self, conn):
        """The site in ``conn``, set as the current site (and the user's
        security manager, in Zope 2) while the block runs."""
        root = rootFolder(conn)
        previous = getSite()
        if isZope2(root):
            with zope2Context(root, self.path, self.user,
                              self.serverURL) as site:
                setSite(site)
                try:
                    yield site
                finally:
                    setSite(previous)
        else:
            site = traverse(root, self.path)
            setSite(site)
            try:
                yield site
            finally:
                setSite(previous)

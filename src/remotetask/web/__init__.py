"""The remotetask web service: XML-RPC (/RPC2), a JSON API (/api/, described
by /api/openapi.json), a management page (/) and Prometheus metrics
(/metrics), on Pyramid with one ZODB connection per request.

``make_app(db, service_name, users=..., processor=...)`` builds the WSGI
application; ``remotetask serve`` runs it with waitress together with a
processor.  See README.txt in this package.
"""


def __getattr__(name):
    # make_app is imported on first use: importing a module of this package
    # (e.g. web.auth for `remotetask user`) does not load Pyramid.
    if name == 'make_app':
        from remotetask.web.app import make_app
        return make_app
    raise AttributeError('module %r has no attribute %r' % (__name__, name))

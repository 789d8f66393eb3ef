"""The remotetask web service: XML-RPC (/RPC2), a JSON API (/api/, described
by /api/openapi.json), a management page (/) and Prometheus metrics
(/metrics), on Pyramid with one ZODB connection per request.

``make_app(db, service_name, users=..., processor=...)`` builds the WSGI
application; ``remotetask serve`` runs it with waitress together with a
processor.  See README.txt in this package.
"""
from remotetask.web.app import make_app  # noqa: F401

"""The Pyramid application of the tests (``test_pyramid.py``): run through
WebTest with ``makeApp`` or by ``pserve`` with ``main`` (PasteDeploy)."""
import time

from persistent.mapping import PersistentMapping
from pyramid.config import Configurator

from remotetask.job import currentJob


class ViewFailed(Exception):
    pass


def processNote(input):
    """A task that edits the application's data."""
    root = currentJob().service._p_jar.root()
    root['notes'][input] += ' and processed'
    return input.upper()


def slow(input):
    """Runs until cancelled (its processor stops) or ``input`` seconds."""
    deadline = time.monotonic() + float(input)
    while time.monotonic() < deadline and not currentJob().cancelled:
        time.sleep(0.05)


def _write(request):
    from pyramid_zodbconn import get_connection
    conn = get_connection(request)
    assert request.tasks._p_jar is conn     # the request's own connection
    name = request.matchdict['name']
    conn.root()['notes'][name] = 'written'
    return name, request.tasks.add('note', name)


def addView(request):
    name, jobid = _write(request)
    return {'job': jobid}


def failView(request):
    _write(request)
    raise ViewFailed('the view failed after adding its job')


def slowView(request):
    return {'job': request.tasks.add('slow', 120)}


def configure(settings):
    """The configurator of the application; the database prepared."""
    config = Configurator(settings=settings)
    config.include('remotetask.pyramid')
    config.add_task('note', 'remotetask.tests.pyramidapp.processNote',
                    max_retries=0)
    config.add_task('slow', slow)
    for name, view in (('add', addView), ('fail', failView),
                       ('slow', slowView)):
        config.add_route(name, '/%s/{name}' % name)
        config.add_view(view, route_name=name, renderer='json')
    db = config.registry._zodb_databases['']
    with db.transaction() as conn:
        conn.root().setdefault('notes', PersistentMapping())
        conn.root().setdefault('app', PersistentMapping())
    return config


def main(global_config, **settings):
    """PasteDeploy's app factory (``use = call:...pyramidapp:main``)."""
    return configure(settings).make_wsgi_app()

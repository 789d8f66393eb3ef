"""``remotetask serve``: the web service and a processor in one process.

Only the options are declared here; ``remotetask.web.serve.run`` (imported
when the command runs: it loads Pyramid and waitress) does the work.
"""
import click

from remotetask.cli.common import DEFAULT_CONCURRENCY, db_options

#: ``remotetask.web.app.MAX_BODY`` (not imported here: a test checks they
#: agree).
MAX_BODY = 1024 * 1024


@click.command()
@db_options
@click.option('--host', default='127.0.0.1', show_default=True,
              help='Address to listen on.  Anything but loopback needs '
                   '--users.')
@click.option('--port', default=8080, show_default=True,
              type=click.IntRange(0, 65535))
@click.option('--users', 'users_path', metavar='FILE',
              type=click.Path(dir_okay=False),
              help='Users file (remotetask user add); without it, anonymous '
                   'use from loopback only.')
@click.option('--concurrency', default=DEFAULT_CONCURRENCY, show_default=True,
              type=click.IntRange(1),
              help='Jobs run at the same time (one thread each).')
@click.option('--lease', default=30.0, show_default=True,
              type=click.FloatRange(0.1), help='Lease of a running job (s).')
@click.option('--grace', type=click.FloatRange(min=0), default=30.0,
              show_default=True,
              help='Seconds running jobs get to finish after SIGTERM/SIGINT '
                   '(a second signal exits at once).')
@click.option('--no-processing', is_flag=True,
              help='Serve only; start processing later from the page or '
                   'the API.')
@click.option('--threads', default=8, show_default=True,
              type=click.IntRange(1), help='HTTP worker threads.')
@click.option('--max-body', default=MAX_BODY, show_default=True,
              type=click.IntRange(1), help='Largest request body (bytes).')
def serve(**options):
    """Serve XML-RPC, the JSON API, the management page and /metrics, and
    process the jobs, in this process.  With no --import or --zcml, the
    example tasks (echo, sum, sleep, fail) are loaded."""
    from remotetask.web.serve import run
    run(**options)

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
              envvar='REMOTETASK_USERS', show_envvar=True,
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
@click.option('--connection-limit', default=1000, show_default=True,
              type=click.IntRange(1),
              help='Open connections at most; more wait to be accepted.')
@click.option('--channel-timeout', default=30, show_default=True,
              type=click.IntRange(1),
              help='Close a connection idle this long between requests (s).')
@click.option('--request-timeout', default=15, show_default=True,
              type=click.IntRange(1),
              help='Close a connection that has not sent a whole request '
                   'this long after connecting or after the request\'s '
                   'first byte (s).')
@click.option('--trusted-proxy', metavar='ADDRESS',
              help='Address of a reverse proxy whose X-Forwarded-For, '
                   '-Proto, -Host and -Port headers are believed.')
@click.option('--secure-cookies', is_flag=True,
              help='Send the login cookie over HTTPS only (behind a TLS '
                   'proxy).')
@click.option('--session-idle', default=3600, show_default=True,
              type=click.IntRange(1),
              help='A login session ends after this long without a '
                   'request (s).')
@click.option('--session-max', default=8 * 3600, show_default=True,
              type=click.IntRange(1),
              help='A login session ends this long after the login (s).')
@click.option('--pack-interval', type=click.FloatRange(min=0),
              default=86400.0, show_default=True, metavar='SECONDS',
              help='Pack the database this often, in the background, when '
                   'this process holds its FileStorage (0: never).')
def serve(**options):
    """Serve XML-RPC, the JSON API, the management page and /metrics, and
    process the jobs, in this process.  With no --import or --zcml, the
    example tasks (echo, sum, sleep, fail) are loaded."""
    from remotetask.web.serve import run
    run(**options)

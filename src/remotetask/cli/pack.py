"""``remotetask pack``: pack the database (``remotetask.packing``)."""
import click

from remotetask.cli.common import closeWithContext, errorText, openDatabase


@click.command()
@click.option('--db', 'uri', default=None, metavar='URI',
              envvar='REMOTETASK_DB', show_envvar=True,
              help='zodburi URI (file://, zeo://host:port, postgres://...) '
                   'or a FileStorage path [default: ./var/Data.fs].')
@click.option('--days', type=click.FloatRange(min=0), default=0.0,
              show_default=True,
              help='Days of history to keep (0: only the current state).')
def pack(uri, days):
    """Pack the database: give back the space of removed jobs and old
    versions of objects.  Works on a FileStorage (directly, or through the
    process serving it), a ZEO server's storage and RelStorage; jobs keep
    running meanwhile."""
    from remotetask import packing
    database = closeWithContext(openDatabase(uri, create=False))
    try:
        before, after = packing.pack(database, days)
    except Exception as e:
        raise click.ClickException('packing failed: %s' % errorText(e))
    click.echo('packed: %s -> %s' % (packing._mb(before), packing._mb(after)))

"""What the commands share: the database options, loading tasks, opening
the database with clear errors.

Imports only click at module level: ``remotetask --help`` imports every
command module, so what a command needs is imported when it runs.
"""
import importlib
import logging
import os
import sys

import click

#: ``remotetask.db.DEFAULT_SERVICE`` (not imported here: that module loads
#: the ZODB; a test checks they agree).
DEFAULT_SERVICE = 'tasks'


#: Jobs ``serve`` and ``worker`` run at once by default, one thread each:
#: a fixed number rather than Celery's one per core, because remotetask's
#: jobs are threads of one process (a job that computes holds the GIL, one
#: that waits on I/O does not) and each thread holds a ZODB connection.
#: Raise it for I/O-bound jobs; run more worker processes for CPU-bound ones.
DEFAULT_CONCURRENCY = 4


class _SameTidInvalidation(logging.Filter):
    """Drop ZEO's "Ignoring invalidation with same tid as current"
    warning. A client of the embedded server that commits (``add``,
    ``cancel``...) receives the invalidation of its own transaction for
    objects its cache already holds at that tid; ZEO ignores it, as it
    should, but warns each time, and with no logging configured the short
    commands printed it on stderr once per object, after their output."""

    def filter(self, record):
        return record.getMessage() != (
            'Ignoring invalidation with same tid as current')


logging.getLogger('ZEO.cache').addFilter(_SameTidInvalidation())


def errorText(exc):
    """``Type: message`` of an exception (just the message for an
    ImportError, whose message names the module)."""
    text = str(exc)
    if isinstance(exc, ImportError):
        return text
    return '%s: %s' % (type(exc).__name__, text) if text else \
        type(exc).__name__


def loadTasks(imports=(), zcml=()):
    """Import the modules and load the ZCML files that register tasks.

    A module registers its tasks when imported; if it has a
    ``registerTasks()`` function, that is called too (so that a module
    imported before, e.g. by another command of the same process, registers
    again)."""
    for name in imports:
        try:
            module = importlib.import_module(name)
            register = getattr(module, 'registerTasks', None)
            if callable(register):
                register()
        except Exception as e:      # ImportError, or the module's own error
            raise click.BadParameter(
                'can not import %r: %s' % (name, errorText(e)),
                param_hint='--import')
    for path in zcml:
        from remotetask import zcml as zcmlmod
        try:
            zcmlmod.loadFile(path)
        except Exception as e:
            raise click.BadParameter('can not load %r: %s' % (path, e),
                                     param_hint='--zcml')


def db_options(func):
    """--db, --service, --import and --zcml, shared by the subcommands."""
    func = click.option('--zcml', 'zcml', multiple=True,
                        type=click.Path(exists=True, dir_okay=False),
                        help='ZCML file registering tasks (repeatable).')(func)
    func = click.option('--import', 'imports', multiple=True,
                        metavar='MODULE',
                        help='Module to import; it registers tasks '
                             '(repeatable).')(func)
    func = click.option('--service', default=DEFAULT_SERVICE,
                        show_default=True,
                        help='Key of the service at the database root.')(func)
    func = click.option('--db', 'uri', default=None, metavar='URI',
                        envvar='REMOTETASK_DB', show_envvar=True,
                        help='zodburi URI (file://, memory://, zeo://host:port,'
                             ' postgres://...) or a FileStorage path '
                             '[default: ./var/Data.fs].')(func)
    return func


def requireExisting(uri):
    """Refuse (a usage error) a FileStorage file that does not exist.

    Only ``serve``, ``worker``, ``add`` and ``pause`` create a database: a command
    that reads or changes existing jobs, given a mistyped ``--db``, would
    otherwise create an empty database and answer as if it were the real
    one ("no such job", all counts 0)."""
    from remotetask import db as dbmod
    path = dbmod.fileStorageFile(uri)
    if path is not None and not os.path.exists(path):
        raise click.BadParameter(
            'no database at %s (the file does not exist; only serve, worker, '
            'add and pause create one)' % path, param_hint='--db')


def openDatabase(uri, create=True, **options):
    """Open the database ``uri`` (``remotetask.db.openDB``); a bad URI is
    a usage error (exit status 2), a database that can not be opened an
    error (exit status 1): one line each, never a traceback.  Without
    ``create``, a FileStorage file that does not exist is a usage error
    (``requireExisting``)."""
    if not create:
        requireExisting(uri)
    from remotetask import db as dbmod
    from remotetask import startup
    from remotetask.embedded import DatabaseBusy
    from remotetask.interfaces import RemoteTaskError
    try:
        database = dbmod.openDB(uri, **options)
        # The bulk of a command's start-up (the ZODB's imports) is done.
        startup.ready()
        return database
    except DatabaseBusy as e:
        # Not a usage error (no usage text), but the --db given can not be
        # used: the exit status of one.
        error = click.ClickException(str(e))
        error.exit_code = 2
        raise error
    except RemoteTaskError as e:
        raise click.BadParameter(str(e), param_hint='--db')
    except Exception as e:      # unreadable file, server refusing...
        raise click.ClickException('can not open the database %s: %s' % (
            dbmod.normalizeURI(uri), errorText(e)))


def closeWithContext(database):
    """Close ``database`` when the current click command ends."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.call_on_close(lambda: closeDatabase(database))
    return database


def closeDatabase(database):
    """Close ``database``; on a full disk without the FileStorage index
    write that would fail (``remotetask.health.beforeClose``)."""
    from remotetask import health
    health.beforeClose(database)
    database.close()


def openService(uri, service, imports, zcml, create=False):
    """Load the tasks and open the database; return a ServiceRunner (the
    database closes when the command ends).  Without ``create``, a
    FileStorage file that does not exist is a usage error."""
    loadTasks(imports, zcml)
    from remotetask import db as dbmod
    database = closeWithContext(openDatabase(uri, create=create))
    return dbmod.ServiceRunner(database, service)


def jobCount(n):
    """``1 job``, ``0 jobs``, ``2 jobs``: a count for a message."""
    return '%d job%s' % (n, '' if n == 1 else 's')


def fail(e):
    """Print ``Error: e`` and exit with status 1."""
    click.echo('Error: %s' % e, err=True)
    sys.exit(1)


def configureLogging(level='INFO'):
    """Log to stderr at ``level`` (unless logging is configured)."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(
            stream=sys.stderr, level=level,
            format='%(asctime)s %(levelname)s [%(name)s] %(message)s')
    else:
        root.setLevel(level)
    # ZEO (the embedded server, the clients) logs every connection at INFO.
    logging.getLogger('ZEO').setLevel(max(logging.WARNING,
                                          logging.getLevelName(level)))

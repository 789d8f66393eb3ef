"""The ``remotetask`` command.

``main`` is a click group whose commands live in the modules of this
package, one module per command group:

- ``jobs``: ``add``, ``status``, ``counts``, ``cancel``, ``clean``;
- ``routing``: ``queues``, ``pause``, ``resume``, ``retry``, ``purge``,
  ``delete``;
- ``tasks``: ``tasks``;
- ``worker``: ``worker`` (``remotetask.worker`` has the signal loop);
- ``serve``: ``serve`` (the web stack is imported by this command only);
- ``users``: ``user add|token|list|remove``;
- ``workers``: ``workers`` (the worker registry);
- ``common``: the options and helpers they share.

A command's module is imported only when that command runs or ``--help``
lists it, and those modules import nothing heavy at module level (no
ZODB, no Pyramid): each command imports what it needs when it runs.  A
new command is a module here plus a line in ``COMMANDS``.  ``run(argv)``
runs the command in-process and returns its exit status (for tests);
``entry()`` is the program (the garbage collector during start-up and at
exit: ``remotetask.startup``).
"""
import importlib
import sys

import click

#: Command name -> ``'module:attribute'`` of its click command.
COMMANDS = {
    'add': 'remotetask.cli.jobs:add',
    'cancel': 'remotetask.cli.jobs:cancel',
    'clean': 'remotetask.cli.jobs:clean',
    'counts': 'remotetask.cli.jobs:counts',
    'pack': 'remotetask.cli.pack:pack',
    'delete': 'remotetask.cli.routing:delete',
    'pause': 'remotetask.cli.routing:pause',
    'purge': 'remotetask.cli.routing:purge',
    'queues': 'remotetask.cli.routing:queues',
    'resume': 'remotetask.cli.routing:resume',
    'retry': 'remotetask.cli.routing:retry',
    'serve': 'remotetask.cli.serve:serve',
    'status': 'remotetask.cli.jobs:status',
    'tasks': 'remotetask.cli.tasks:tasks',
    'user': 'remotetask.cli.users:user',
    'worker': 'remotetask.cli.worker:worker',
    'workers': 'remotetask.cli.workers:workers',
}


def _isRemoteTaskError(exc):
    # remotetask.interfaces is heavy (zope.schema); if it is not imported,
    # nothing could have raised one of its exceptions.
    interfaces = sys.modules.get('remotetask.interfaces')
    return interfaces is not None and isinstance(exc,
                                                 interfaces.RemoteTaskError)


class _Group(click.Group):
    """Commands are imported from ``COMMANDS`` when needed.  Every
    RemoteTaskError a subcommand lets through (no service of that name, a
    job in the wrong status...) is an error message and exit status 1, never
    a traceback."""

    def list_commands(self, ctx):
        return sorted(set(COMMANDS) | set(self.commands))

    def get_command(self, ctx, name):
        command = self.commands.get(name)
        if command is None and name in COMMANDS:
            module, attr = COMMANDS[name].split(':')
            command = getattr(importlib.import_module(module), attr)
            self.commands[name] = command
        return command

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except Exception as e:
            if _isRemoteTaskError(e):
                raise click.ClickException(str(e))
            raise


@click.group(cls=_Group)
@click.version_option(package_name='remotetask')
def main():
    """remotetask: a task queue that lives inside the ZODB."""


def entry():
    """The program: ``python -m remotetask`` and the ``remotetask`` script.
    ``main()`` with the garbage collector set for a short start-up and a
    quick exit (``remotetask.startup``)."""
    from remotetask import startup
    startup.begin()
    try:
        main()
    finally:
        startup.end()


def run(argv=None):
    """Run the command with ``argv``; return the exit code (for tests)."""
    try:
        main.main(args=argv, prog_name='remotetask', standalone_mode=False)
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except click.exceptions.Abort:
        click.echo('Aborted!', err=True)
        return 1
    except SystemExit as e:
        return e.code
    return 0


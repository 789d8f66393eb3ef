"""``remotetask tasks``: the task names, local and of the live workers."""
import os
import sys

import click

from remotetask.cli.common import db_options, loadTasks, openService

NO_TASKS = """\
no tasks: none is registered in this command (give --import MODULE or
--zcml FILE), and no live worker of the database runs any.
Task names come from ITask utilities registered in a process: by importing
a module that registers them (--import remotetask.examples: echo, sum,
sleep, fail), or by a ZCML file (<remotetask:task name="..." function="..."/>).
`remotetask worker` and `remotetask serve` always run remotetask.tracker;
`serve` with no --import or --zcml runs the examples.  `remotetask add`
accepts the names of this list."""


@click.command()
@db_options
def tasks(uri, service, imports, zcml):
    """List the task names `remotetask add` accepts: those registered here
    (--import, --zcml) and those the live workers of the database run (with
    their worker ids).  The database is looked at if --db is given or the
    default ./var/Data.fs exists."""
    loadTasks(imports, zcml)
    from remotetask.processor import taskNames
    local = set(taskNames())
    remote = {}
    from remotetask.db import DEFAULT_DB
    if uri is not None or os.path.exists(DEFAULT_DB):
        runner = openService(uri, service, (), ())
        for worker in runner(lambda s: s.workers()):
            for name in worker['tasks']:
                remote.setdefault(name, []).append(worker['id'])
    names = sorted(local | set(remote))
    if not names:
        click.echo(NO_TASKS, err=True)
        sys.exit(1)
    for name in names:
        if name in local:
            click.echo(name)
        else:
            click.echo('%s\t(run by %s)' % (name, ', '.join(remote[name])))

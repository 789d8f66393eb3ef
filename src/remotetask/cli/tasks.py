"""``remotetask tasks``: the task names."""
import click

from remotetask.cli.common import db_options, loadTasks


@click.command()
@db_options
def tasks(uri, service, imports, zcml):
    """List the registered tasks."""
    loadTasks(imports, zcml)
    from remotetask.service import TaskService
    for name in sorted(TaskService().getAvailableTasks()):
        click.echo(name)

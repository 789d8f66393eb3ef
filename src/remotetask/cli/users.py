"""``remotetask user add|token|list|remove``: the users file of ``serve``."""
import sys

import click

#: ``remotetask.web.auth.ROLES`` (not imported here: that module loads
#: Pyramid; a test checks they agree).
ROLES = ('viewer', 'manager')


@click.group()
def user():
    """Manage the users file of ``remotetask serve``."""


_users_option = click.option('--users', 'users_path', metavar='FILE',
                             required=True, type=click.Path(dir_okay=False),
                             help='The users file (created if missing).')


def _password():
    if sys.stdin.isatty():
        return click.prompt('Password', hide_input=True,
                            confirmation_prompt=True)
    line = sys.stdin.readline()
    return line.rstrip('\r\n')


@user.command('add')
@_users_option
@click.argument('name')
@click.option('--role', type=click.Choice(ROLES), required=True)
def addCommand(users_path, name, role):
    """Add (or change) user NAME; the password is asked for, or read from
    the first line of stdin when it is not a terminal."""
    from remotetask.web.auth import UsersFileError, addUser
    try:
        addUser(users_path, name, _password(), role)
    except UsersFileError as e:
        raise click.ClickException(str(e))
    click.echo('user %r (%s) saved in %s' % (name, role, users_path))


@user.command('token')
@_users_option
@click.argument('name')
def tokenCommand(users_path, name):
    """Make an API token for NAME and print it (only this once)."""
    from remotetask.web.auth import UsersFileError, addToken
    try:
        tokenid, token = addToken(users_path, name)
    except UsersFileError as e:
        raise click.ClickException(str(e))
    click.echo(token)


@user.command('list')
@_users_option
def listCommand(users_path):
    """List the users and their roles."""
    from remotetask.web.auth import Users, UsersFileError
    try:
        users = Users.read(users_path)
    except UsersFileError as e:
        raise click.ClickException(str(e))
    for name, entry in sorted(users.items()):
        click.echo('%s\t%s\t%d token(s)' % (name, entry['role'],
                                            len(entry.get('tokens') or {})))


@user.command('remove')
@_users_option
@click.argument('name')
def removeCommand(users_path, name):
    """Remove user NAME and its tokens."""
    from remotetask.web.auth import Users, UsersFileError
    try:
        users = Users.read(users_path)
        if name not in users:
            raise UsersFileError('no user %r in %s' % (name, users_path))
        del users[name]
        Users.write(users_path, users)
    except UsersFileError as e:
        raise click.ClickException(str(e))
    click.echo('user %r removed' % name)

"""``remotetask user add|token|list|remove``: the users file of ``serve``.

``remotetask user token NAME`` makes a token (``token new NAME`` too);
``token list NAME`` shows the ids of NAME's tokens, ``token revoke NAME
ID...`` (or the token itself, or ``--all``) revokes them: the running
``serve`` refuses a revoked token from its next request on.
"""
import sys

import click

#: ``remotetask.web.auth.ROLES`` (not imported here: that module loads
#: Pyramid; a test checks they agree).
ROLES = ('viewer', 'manager')


@click.group()
def user():
    """Manage the users file of ``remotetask serve``."""


_users_option = click.option('--users', 'users_path', metavar='FILE',
                             envvar='REMOTETASK_USERS', show_envvar=True,
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


class _TokenGroup(click.Group):
    """``token NAME`` is ``token new NAME`` (as before there were more)."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands \
                and args[0] not in ctx.help_option_names:
            args = ['new'] + list(args)
        return super().parse_args(ctx, args)


@user.group('token', cls=_TokenGroup)
def token():
    """API tokens: NAME (or new NAME) makes one, list NAME shows their ids,
    revoke NAME ID... revokes."""


@token.command('new')
@_users_option
@click.argument('name')
def tokenCommand(users_path, name):
    """Make an API token for NAME and print it (only this once; its id
    goes to stderr)."""
    from remotetask.web.auth import UsersFileError, addToken
    try:
        tokenid, secret = addToken(users_path, name)
    except UsersFileError as e:
        raise click.ClickException(str(e))
    click.echo(secret)
    click.echo('token id %s (remotetask user token revoke --users %s %s %s)'
               % (tokenid, users_path, name, tokenid), err=True)


@token.command('list')
@_users_option
@click.argument('name')
def tokenListCommand(users_path, name):
    """The ids of NAME's tokens, one a line."""
    from remotetask.web.auth import Users, UsersFileError
    try:
        users = Users.read(users_path)
        if name not in users:
            raise UsersFileError('no user %r in %s' % (name, users_path))
    except UsersFileError as e:
        raise click.ClickException(str(e))
    for tokenid in sorted(users[name].get('tokens') or {}):
        click.echo(tokenid)


@token.command('revoke')
@_users_option
@click.argument('name')
@click.argument('tokens', nargs=-1)
@click.option('--all', 'everything', is_flag=True,
              help='Revoke every token of NAME.')
def tokenRevokeCommand(users_path, name, tokens, everything):
    """Revoke tokens of NAME, each given by its id (token list) or as the
    token itself; --all: all of them."""
    from remotetask.web.auth import UsersFileError, revokeTokens
    if bool(tokens) == everything:
        raise click.UsageError('give token ids (or tokens), or --all')
    try:
        gone = revokeTokens(users_path, name, tokens)
    except UsersFileError as e:
        raise click.ClickException(str(e))
    click.echo('revoked %d token(s) of %r%s' % (
        len(gone), name, (': ' + ', '.join(gone)) if gone else ''))


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

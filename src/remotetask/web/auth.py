"""Users, roles and how a request proves who it is.

The users file is JSON written by ``remotetask user add`` and
``remotetask user token``::

    {"users": {"alice": {"role": "manager",
                         "password": "scrypt$16384$8$1$<salt>$<hash>",
                         "tokens": {"<token id>": "<sha256 of the token>"}}}}

Passwords are stored as salted ``hashlib.scrypt`` hashes, tokens as the
SHA-256 of a random 32-byte secret (a token is only shown once, when it is
made).  The file is read again when it changes, so new users and tokens
work without a restart.

Roles: a ``viewer`` may read everything (permission ``view``); a
``manager`` may also change things (permission ``manage``).

A request is authenticated by, in this order: an ``Authorization: Basic``
header, an ``Authorization: Bearer <token>`` header, or the session cookie
set by the login form (the session itself is kept by the server, see
``sessions``).  The users file is looked at (a ``stat``) on every request,
so removing a user, changing its role or password, or revoking a token
(``remotetask user token revoke``) applies to the very next request, and
ends the user's sessions.  Failed attempts back off per client address and
per user name (``throttle``); a user name that does not exist costs the
same scrypt check as one that does, so the time of the answer does not
tell which names exist.  Requests authenticated by the session must carry
the session's CSRF token in an ``X-CSRF-Token`` header (or a
``csrf_token`` form field) to change anything.  A browser may also send
remembered Basic credentials (or none, in anonymous mode) with a request a
foreign page makes, so any request that changes something and that a
browser marks as cross-site (``Origin``, ``Sec-Fetch-Site``) is refused
(``app.crossSiteTween``); clients that are not browsers send neither.

With no users file the service is anonymous: every request from a loopback
address is a manager, every other one is refused (``remotetask serve`` also
refuses to listen on anything but loopback then).  The request must also
name a loopback host (``Host: localhost``, ``127.0.0.1``, ``[::1]``): a
foreign page whose domain was made to resolve to 127.0.0.1 (DNS rebinding)
is same-origin for the browser, but names its own host.
"""
import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import secrets
import threading


log = logging.getLogger('remotetask.web')

VIEWER = 'viewer'
MANAGER = 'manager'
ROLES = (VIEWER, MANAGER)
VIEW = 'view'
MANAGE = 'manage'
PERMISSIONS = {VIEWER: {VIEW}, MANAGER: {VIEW, MANAGE}}

_SCRYPT = {'n': 2 ** 14, 'r': 8, 'p': 1}
#: scrypt checks running at once (each takes 16 MiB and a core for ~50 ms):
#: a burst of guesses queues here instead of taking every CPU.
_SCRYPT_SLOTS = threading.BoundedSemaphore(2)
_dummy = []
_dummyLock = threading.Lock()


def dummyHash():
    """A hash of a random password with the usual parameters, checked for
    unknown users so that they cost the time known ones do."""
    with _dummyLock:
        if not _dummy:
            _dummy.append(hashPassword(secrets.token_hex(16)))
        return _dummy[0]


class UsersFileError(ValueError):
    """The users file can not be read or has a bad entry."""


def hashPassword(password, salt=None, n=_SCRYPT['n'], r=_SCRYPT['r'],
                 p=_SCRYPT['p']):
    """A salted scrypt hash of ``password`` as one string."""
    salt = os.urandom(16) if salt is None else salt
    digest = hashlib.scrypt(password.encode('utf-8'), salt=salt, n=n, r=r,
                            p=p, dklen=32)
    return 'scrypt$%d$%d$%d$%s$%s' % (
        n, r, p, base64.b64encode(salt).decode('ascii'),
        base64.b64encode(digest).decode('ascii'))


def checkPassword(password, stored):
    """True if ``password`` matches the hash ``stored``."""
    try:
        scheme, n, r, p, salt, digest = stored.split('$')
        if scheme != 'scrypt':
            return False
        salt = base64.b64decode(salt)
        expected = base64.b64decode(digest)
        with _SCRYPT_SLOTS:
            got = hashlib.scrypt(password.encode('utf-8'), salt=salt,
                                 n=int(n), r=int(r), p=int(p),
                                 dklen=len(expected))
    except (ValueError, TypeError, binascii.Error, AttributeError,
            UnicodeEncodeError):
        return False
    return hmac.compare_digest(got, expected)


def tokenHash(token):
    return hashlib.sha256(token.encode('utf-8')).hexdigest()


class Users:
    """The users file, read again whenever it changes on disk.

    ``authenticate(name, password)`` and ``byToken(token)`` return
    ``(name, role)`` or None.  Successful password checks are remembered
    (keyed by a keyed hash of name and password) so that HTTP Basic clients
    do not pay for scrypt on every request.
    """

    def __init__(self, path):
        self.path = path
        self._lock = threading.Lock()
        self._stamp = None
        self._users = {}
        self._tokens = {}
        self._verified = {}
        self._key = os.urandom(32)
        dummyHash()     # made now, not at the first unknown user name
        self._reload()

    # -- the file -------------------------------------------------------------

    @staticmethod
    def read(path):
        """The ``users`` mapping of a users file ({} if it does not exist).

        :raises UsersFileError: if it is not a users file.
        """
        if not os.path.exists(path):
            return {}
        try:
            with open(path, encoding='utf-8') as f:
                data = json.load(f)
            users = data['users']
            if not isinstance(users, dict):
                raise TypeError('"users" is not an object')
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UsersFileError('can not read users file %s: %s'
                                 % (path, e))
        for name, entry in users.items():
            if not isinstance(entry, dict) or entry.get('role') not in ROLES:
                raise UsersFileError(
                    'users file %s: user %r has role %r; a role is one of: %s'
                    % (path, name, entry.get('role') if isinstance(
                        entry, dict) else None, ', '.join(ROLES)))
        return users

    @staticmethod
    def write(path, users):
        """Write the users file atomically, readable by its owner only."""
        tmp = '%s.%d.tmp' % (path, os.getpid())
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                with os.fdopen(fd, 'w', encoding='utf-8') as f:
                    json.dump({'users': users}, f, indent=2, sort_keys=True)
                    f.write('\n')
                os.replace(tmp, path)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
        except OSError as e:
            raise UsersFileError('can not write users file %s: %s'
                                 % (path, e.strerror or e))

    def _reload(self):
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            stamp = None
        if stamp == self._stamp:
            return
        users = self.read(self.path)
        tokens = {}
        for name, entry in users.items():
            for digest in (entry.get('tokens') or {}).values():
                tokens[digest] = name
        self._users, self._tokens = users, tokens
        self._verified = {}
        self._stamp = stamp

    def refresh(self):
        """Re-read the file if it changed; keep the old state if the new
        file is broken (a half-edited file must not lock everyone out)."""
        with self._lock:
            try:
                self._reload()
            except UsersFileError as e:
                if getattr(self, '_broken', None) != str(e):
                    self._broken = str(e)
                    log.error('%s; still using the users as they were '
                              'before this change', e)
            else:
                self._broken = None

    def __len__(self):
        return len(self._users)

    def role(self, name):
        entry = self._users.get(name)
        return None if entry is None else entry['role']

    def entry(self, name):
        """User ``name``'s entry as the file has it now, or None."""
        self.refresh()
        return self._users.get(name)

    # -- credentials ----------------------------------------------------------

    def _cacheKey(self, name, password, stored):
        return hmac.new(self._key, ('%s\0%s\0%s' % (
            name, password, stored)).encode('utf-8', 'surrogatepass'),
            'sha256').digest()

    def verified(self, name, password):
        """True if this name and password passed a check already (and
        nothing changed since): no scrypt, no throttling needed."""
        self.refresh()
        entry = self._users.get(name)
        stored = entry.get('password') if entry else None
        return bool(stored) and \
            self._cacheKey(name, password, stored) in self._verified

    def authenticate(self, name, password):
        """``(name, role)`` or None.  An unknown name costs a scrypt check
        too (of a dummy hash)."""
        self.refresh()
        entry = self._users.get(name)
        stored = entry.get('password') if entry else None
        if not stored:
            checkPassword(password, dummyHash())
            return None
        key = self._cacheKey(name, password, stored)
        if key not in self._verified:
            if not checkPassword(password, stored):
                return None
            if len(self._verified) > 1000:
                self._verified.clear()
            self._verified[key] = True
        return name, entry['role']

    def byToken(self, token):
        self.refresh()
        name = self._tokens.get(tokenHash(token))
        if name is None or name not in self._users:
            return None
        return name, self._users[name]['role']


def addUser(path, name, password, role):
    """Add or replace user ``name`` in the users file (keeps its tokens)."""
    if role not in ROLES:
        raise UsersFileError('role must be one of %s, not %r'
                             % (', '.join(ROLES), role))
    if not name or ':' in name or name != name.strip():
        raise UsersFileError('a user name must be non-empty, without ":" '
                             'or surrounding spaces: %r' % (name,))
    if not password:
        raise UsersFileError('the password must not be empty')
    users = Users.read(path)
    entry = dict(users.get(name) or {})
    entry.update(role=role, password=hashPassword(password))
    users[name] = entry
    Users.write(path, users)


def revokeTokens(path, name, which=()):
    """Revoke tokens of ``name``: each of ``which`` is a token id (as
    ``remotetask user token list`` shows) or the token itself; none: all
    of them.  Returns the ids revoked.

    :raises UsersFileError: no such user, or no such token of that user.
    """
    users = Users.read(path)
    if name not in users:
        raise UsersFileError('no user %r in %s' % (name, path))
    entry = dict(users[name])
    tokens = dict(entry.get('tokens') or {})
    if not which:
        gone = sorted(tokens)
    else:
        byHash = {digest: tokenid for tokenid, digest in tokens.items()}
        gone = []
        for given in which:
            tokenid = given if given in tokens else byHash.get(
                tokenHash(given))
            if tokenid is None:
                raise UsersFileError('user %r has no token %r (token ids: '
                                     '%s)' % (name, given, ', '.join(
                                         sorted(tokens)) or 'none'))
            gone.append(tokenid)
    for tokenid in gone:
        tokens.pop(tokenid, None)
    entry['tokens'] = tokens
    users[name] = entry
    Users.write(path, users)
    return gone


def addToken(path, name):
    """Make a new API token for ``name``; return ``(token id, token)``.

    Only the token's hash is stored: the token is shown this once.
    """
    users = Users.read(path)
    if name not in users:
        raise UsersFileError('no user %r in %s' % (name, path))
    token = 'rt_' + secrets.token_urlsafe(32)
    tokenid = secrets.token_hex(4)
    entry = dict(users[name])
    entry['tokens'] = dict(entry.get('tokens') or {}, **{tokenid:
                                                         tokenHash(token)})
    users[name] = entry
    Users.write(path, users)
    return tokenid, token


# -- Pyramid -----------------------------------------------------------------

def isLoopback(address):
    try:
        return ipaddress.ip_address(address or '').is_loopback
    except ValueError:
        return False


def isLoopbackName(host):
    """True for ``localhost`` and loopback addresses (``host`` without
    its port; IPv6 in brackets or not)."""
    host = (host or '').strip('[]').lower()
    return host == 'localhost' or host.endswith('.localhost') \
        or isLoopback(host)


def requestHost(request):
    """The host named by the request's Host header, without the port."""
    host = request.host or ''
    if host.startswith('['):
        return host[1:].split(']', 1)[0]
    return host.rsplit(':', 1)[0] if host.count(':') == 1 else host


class Identity(dict):
    """``{'name', 'role', 'via'}``; via is basic, token, session or
    anonymous."""


class SecurityPolicy:
    """A Pyramid security policy over ``Users`` (None: anonymous on
    loopback, see the module documentation), the server's ``Sessions``
    and a ``Throttle`` of failed attempts."""

    def __init__(self, users, sessions=None, throttle=None):
        self.users = users
        self.sessions = sessions
        self.throttle = throttle

    def identity(self, request):
        cached = request.environ.get('remotetask.identity', False)
        if cached is not False:
            return cached
        identity = self._identify(request)
        request.environ['remotetask.identity'] = identity
        return identity

    def _identify(self, request):
        if self.users is None:
            if isLoopback(request.remote_addr) and \
                    isLoopbackName(requestHost(request)):
                return Identity(name='anonymous', role=MANAGER,
                                via='anonymous')
            return None
        header = request.headers.get('Authorization', '')
        scheme, _, credentials = header.partition(' ')
        scheme = scheme.lower()
        found, via = None, None
        if scheme == 'basic':
            try:
                name, _, password = base64.b64decode(
                    credentials.strip()).decode('utf-8').partition(':')
            except (binascii.Error, UnicodeDecodeError):
                return None
            found = self.check(request, name, password)
            via = 'basic'
        elif scheme == 'bearer':
            found, via = self.checkToken(request, credentials.strip()), \
                'token'
        elif header:
            return None
        else:
            found, via = self.fromSession(request), 'session'
        if found is None:
            return None
        return Identity(name=found[0], role=found[1], via=via)

    # -- the three ways in (the login form uses ``check`` too) ---------------

    def _shut(self, request, *keys):
        """True (and the request marked for a 429) if ``keys`` back off."""
        if self.throttle is None or self.throttle.wait(*keys) <= 0:
            return False
        request.environ['remotetask.throttled'] = \
            self.throttle.retryAfter(*keys)
        return True

    def check(self, request, name, password):
        """``(name, role)`` if the password is right, else None (counted
        as a failure of the client's address and of the user name; None at
        once while they back off)."""
        # (The name by a digest: a name may be as long as a header, and
        # the throttle remembers up to 100,000 of them.)
        keys = (('address', request.remote_addr), ('user', hashlib.sha256(
            name.encode('utf-8', 'surrogatepass')).digest()[:16]))
        if self.users.verified(name, password):
            return name, self.users.role(name)
        if self._shut(request, *keys):
            return None
        found = self.users.authenticate(name, password)
        if self.throttle is not None:
            if found is None:
                self.throttle.failed(*keys)
            else:
                self.throttle.succeeded(keys[1])
        return found

    def checkToken(self, request, token):
        key = ('address', request.remote_addr)
        if self._shut(request, key):
            return None
        found = self.users.byToken(token)
        if found is None and self.throttle is not None:
            self.throttle.failed(key)
        return found

    def fromSession(self, request):
        sid = request.session.get('sid')
        if sid is None or self.sessions is None:
            return None
        name = self.sessions.user(sid, self.users.entry)
        if name is None:
            request.session.invalidate()
            return None
        return name, self.users.role(name)

    def authenticated_userid(self, request):
        identity = self.identity(request)
        return None if identity is None else identity['name']

    def permits(self, request, context, permission):
        # (Imported here: `remotetask user` uses this module's users file
        # functions without loading Pyramid.)
        from pyramid.security import Allowed, Denied
        identity = self.identity(request)
        if identity is None:
            return Denied('not authenticated')
        if permission in PERMISSIONS[identity['role']]:
            return Allowed('%s may %s' % (identity['role'], permission))
        return Denied('a %s may not %s' % (identity['role'], permission))

    def remember(self, request, userid, **kw):
        """Start a server-side session for ``userid`` in a new cookie
        session with a new CSRF token."""
        request.session.invalidate()
        request.session['sid'] = self.sessions.create(
            userid, self.users.entry(userid))
        request.session.new_csrf_token()
        return []

    def forget(self, request, **kw):
        sid = request.session.get('sid')
        if sid is not None and self.sessions is not None:
            self.sessions.end(sid)
        request.session.invalidate()
        return []


def needsCSRF(request):
    """CSRF callback: only session-authenticated requests are checked."""
    identity = request.identity
    return identity is not None and identity.get('via') == 'session'

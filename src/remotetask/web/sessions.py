"""Login sessions kept by the server, so that they can end.

The login form's cookie (signed, HttpOnly, SameSite=Strict) carries only a
random session id and the CSRF token; who is logged in is kept here, in the
memory of the serving process.  A session ends:

- at logout (the record is dropped: the old cookie is worth nothing, even
  replayed with its CSRF token);
- when its user is removed from the users file, or its role or password
  changed (each record holds the role and password hash it was made with,
  and every request compares them with the users file as it is now);
- after ``idle`` seconds without a request, and ``maximum`` seconds after
  the login whatever happens (``remotetask serve --session-idle`` and
  ``--session-max``);
- when the process ends.

Only a successful login makes a record, so requests without credentials
cost no memory here; the number of records is bounded (``limit``: the
least recently used goes first; ``perUser`` for one user, so that one
account logging in again and again can not push out everybody else's).
"""
import collections
import secrets
import threading
import time

#: Default idle and absolute lifetimes of a session (seconds).
IDLE = 3600
MAXIMUM = 8 * 3600
LIMIT = 10000
PER_USER = 100


def fingerprint(entry):
    """What must not change in a user's entry for its sessions to go on."""
    return (entry.get('role'), entry.get('password'))


class Session:
    __slots__ = ('name', 'fingerprint', 'created', 'seen')

    def __init__(self, name, fingerprint, now):
        self.name = name
        self.fingerprint = fingerprint
        self.created = self.seen = now


class Sessions:
    """The live sessions of this process (thread-safe)."""

    def __init__(self, idle=IDLE, maximum=MAXIMUM, limit=LIMIT,
                 perUser=PER_USER, clock=time.monotonic):
        if not idle > 0 or not maximum > 0:
            raise ValueError('session lifetimes must be positive, not '
                             'idle=%r maximum=%r' % (idle, maximum))
        self.idle = idle
        self.maximum = maximum
        self.limit = limit
        self.perUser = perUser
        self.clock = clock
        self._lock = threading.Lock()
        self._live = collections.OrderedDict()   # least recently seen first

    def __len__(self):
        return len(self._live)

    def create(self, name, entry):
        """Start a session for user ``name`` (its users-file ``entry``);
        return its id."""
        sid = secrets.token_urlsafe(32)
        now = self.clock()
        with self._lock:
            self._prune(now)
            mine = [key for key, session in self._live.items()
                    if session.name == name]
            for key in mine[:max(0, len(mine) - self.perUser + 1)]:
                del self._live[key]     # the user's least recently used
            while len(self._live) >= self.limit:
                self._live.popitem(last=False)
            self._live[sid] = Session(name, fingerprint(entry), now)
        return sid

    def user(self, sid, entryOf):
        """The user name of live session ``sid``, or None (and the session
        ended) if it expired or its user's entry (``entryOf(name)``: the
        entry in the users file now, or None) changed."""
        if not isinstance(sid, str):
            return None
        now = self.clock()
        with self._lock:
            session = self._live.get(sid)
            if session is None:
                return None
            if now - session.seen > self.idle \
                    or now - session.created > self.maximum:
                del self._live[sid]
                return None
            entry = entryOf(session.name)
            if entry is None or fingerprint(entry) != session.fingerprint:
                del self._live[sid]
                return None
            session.seen = now
            self._live.move_to_end(sid)
            return session.name

    def end(self, sid):
        """End session ``sid`` (logout); nothing if it is not live."""
        with self._lock:
            self._live.pop(sid, None)

    def _prune(self, now):
        """Drop expired sessions from the least recently seen end."""
        while self._live:
            sid, session = next(iter(self._live.items()))
            if now - session.seen <= self.idle \
                    and now - session.created <= self.maximum:
                break
            del self._live[sid]

"""Back-off for failed logins (the form, HTTP Basic, bearer tokens).

Failures are counted per client address and per user name (whether the
user exists or not, so that the answer tells nothing).  The first ``free``
failures of a key cost nothing more; the ``free``-th and each further
one shut the key for ``base * 2 ** k`` seconds (k = 0, 1, ...; at most
``cap``).  While a key
is shut every attempt with it is refused at once with 429 and a
``Retry-After``, before any password is checked: a guesser can neither
try more passwords nor spend the server's CPU on scrypt.  A key is
forgotten ``forget`` seconds after its last failure; a success forgets
the user name's failures (not the address's: an attacker with an account
of their own could otherwise clear their address's record between
guesses).  The table holds at most ``limit`` keys (oldest failures go
first), so a flood of addresses costs bounded memory.

Behind a reverse proxy every request comes from the proxy's address:
``remotetask serve --trusted-proxy`` makes waitress take the client's
address from ``X-Forwarded-For`` (see the README).
"""
import collections
import math
import threading
import time

FREE = 5
BASE = 1.0
CAP = 60.0
FORGET = 15 * 60
LIMIT = 100000


class Throttle:
    """Failure counts and back-off per key (thread-safe)."""

    def __init__(self, free=FREE, base=BASE, cap=CAP, forget=FORGET,
                 limit=LIMIT, clock=time.monotonic):
        self.free = free
        self.base = base
        self.cap = cap
        self.forget = forget
        self.limit = limit
        self.clock = clock
        self._lock = threading.Lock()
        # key -> [failures, time of the last failure, shut until]
        self._keys = collections.OrderedDict()

    def wait(self, *keys):
        """Seconds until all of ``keys`` may try again (0: now)."""
        now = self.clock()
        longest = 0.0
        with self._lock:
            for key in keys:
                record = self._keys.get(key)
                if record is not None:
                    longest = max(longest, record[2] - now)
        return longest

    def retryAfter(self, *keys):
        """``wait`` rounded up to whole seconds, for ``Retry-After``."""
        return max(1, math.ceil(self.wait(*keys)))

    def failed(self, *keys):
        """Count a failed attempt against each of ``keys``."""
        now = self.clock()
        with self._lock:
            self._prune(now)
            for key in keys:
                record = self._keys.pop(key, None)
                if record is None or now - record[1] > self.forget:
                    record = [0, now, now]
                record[0] += 1
                record[1] = now
                over = record[0] - self.free
                if over >= 0:
                    record[2] = now + min(self.cap,
                                          self.base * 2 ** min(over, 30))
                self._keys[key] = record
            while len(self._keys) > self.limit:
                self._keys.popitem(last=False)

    def succeeded(self, *keys):
        """Forget the failures of ``keys``."""
        with self._lock:
            for key in keys:
                self._keys.pop(key, None)

    def _prune(self, now):
        while self._keys:
            key, record = next(iter(self._keys.items()))
            if now - record[1] <= self.forget:
                break
            del self._keys[key]

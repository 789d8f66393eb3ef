"""Where the time of a ZEO producers' run goes (bench/producers.py
``--accounting``).

Two halves:

- ``StorageTimers`` wraps a ``ClientStorage``'s methods in one producer
  process: the time spent in each phase of a commit (``tpc_begin``,
  ``store``, ``tpc_vote``, ``tpc_finish``), in loads that went to the
  server (cache misses: one round trip each), in ``prefetch`` and in
  ``new_oid``; the objects and bytes stored per commit.
- ``CPUSampler`` samples, in the parent, the CPU time of processes (the ZEO
  server, the workers, the producers: utime + stime of /proc/PID/stat),
  the machine's busy time (/proc/stat) and the ZEO server's own counters
  (``server_status()``: commits, aborts, conflicts, loads, stores) every
  ``interval`` seconds, so that a window (the producers' loops, from the
  first start to the last end) can be cut out of them afterwards.
- ``python bench/accounting.py zeoserver RUNZEO-ARGS``: ZEO's ``runzeo``
  whose storages' commit lock counts how long it was held
  (``lock_held`` seconds and ``lock_taken`` times in ``server_status()``).
  ZEO's server holds that lock from a transaction's vote to its finish,
  a round trip to the client included: one commit at a time.
"""
import os
import threading
import time

TICK = os.sysconf('SC_CLK_TCK')


def cpuSeconds(pid):
    """utime + stime of process ``pid`` (all its threads), in seconds;
    None once it is gone."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            text = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces: split after its ')'.
    fields = text[text.rindex(')') + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def machineTimes():
    """(busy, total) CPU seconds of the whole machine, all cores."""
    with open('/proc/stat') as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]            # idle + iowait
    total = sum(values[:8])                 # guest time is inside user
    return (total - idle) / TICK, total / TICK


class CPUSampler:
    """Samples ``pids`` (a dict name -> pid, which may grow while it runs)
    and ``status()`` (a callable returning a dict of counters, or None)
    every ``interval`` seconds in a thread of its own."""

    def __init__(self, pids, status=None, interval=0.05):
        self.pids = dict(pids)
        self.status = status
        self.interval = interval
        self.samples = []       # (time.time(), {name: cpu}, busy, total, st)
        self._stop = threading.Event()
        self._thread = None
        self._last = {}

    def add(self, name, pid):
        self.pids[name] = pid

    def sample(self):
        cpu = {}
        for name, pid in list(self.pids.items()):
            value = cpuSeconds(pid)
            # A producer that exited keeps its last figure.
            cpu[name] = value if value is not None else self._last.get(name)
        self._last = cpu
        busy, total = machineTimes()
        status = None
        if self.status is not None:
            try:
                status = self.status()
            except Exception:           # the server is going away
                status = None
        self.samples.append((time.time(), cpu, busy, total, status))

    def _run(self):
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self):
        self.sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)
        self.sample()

    def window(self, start, end):
        """CPU seconds per name, machine busy fraction and server counter
        deltas between the last sample at or before ``start`` and the
        first at or after ``end``."""
        before = [s for s in self.samples if s[0] <= start] or \
            self.samples[:1]
        after = [s for s in self.samples if s[0] >= end] or self.samples[-1:]
        a, b = before[-1], after[0]
        seconds = b[0] - a[0]
        cpu = {}
        for name in b[1]:
            x, y = a[1].get(name), b[1].get(name)
            if y is not None:
                cpu[name] = y - (x or 0.0)
        status = {}
        sa = next((s[4] for s in reversed(before) if s[4]), None)
        sb = next((s[4] for s in after if s[4]), None)
        if sa and sb:
            for key, value in sb.items():
                if isinstance(value, (int, float)) and \
                        isinstance(sa.get(key, 0), (int, float)):
                    status[key] = value - sa.get(key, 0)
        return {'seconds': seconds, 'cpu': cpu,
                'machine_busy': (b[2] - a[2]) / max(1e-9, b[3] - a[3]),
                'cores': os.cpu_count(), 'server': status}


#: The storage methods timed; ``load`` is the cache misses only.
PHASES = ('load', 'prefetch', 'new_oid', 'tpc_begin', 'store', 'tpc_vote',
          'tpc_finish', 'tpc_abort')


class StorageTimers:
    """Times the calls a ZEO client storage makes for one producer (wrap
    before any connection is opened; instance attributes shadow the
    class's methods, which ZODB's MVCC adapter looks up at each call)."""

    def __init__(self, storage):
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self.calls = dict.fromkeys(PHASES, 0)
        self.bytes = 0
        self.loaded = {}        # class name -> cache misses
        for name in PHASES:
            if name == 'load':
                # ClientStorage.loadBefore asks the server only on a miss.
                server = storage._server
                server.load_before = self._classes(
                    self._wrap(name, server.load_before))
            else:
                setattr(storage, name, self._wrap(name,
                                                  getattr(storage, name)))
        store = storage.store

        def sized(oid, serial, data, *args):
            self.bytes += len(data)
            return store(oid, serial, data, *args)
        storage.store = sized

    def _wrap(self, name, method):
        clock = time.perf_counter

        def timed(*args, **kw):
            started = clock()
            try:
                return method(*args, **kw)
            finally:
                self.seconds[name] += clock() - started
                self.calls[name] += 1
        return timed

    def _classes(self, load):
        from ZODB.utils import get_pickle_metadata

        def counted(*args, **kw):
            result = load(*args, **kw)
            if result:
                name = get_pickle_metadata(result[0])[1]
                self.loaded[name] = self.loaded.get(name, 0) + 1
            return result
        return counted

    def figures(self):
        return {'seconds': dict(self.seconds), 'calls': dict(self.calls),
                'bytes': self.bytes, 'loaded': dict(self.loaded)}


def merge(figures):
    """Sum StorageTimers.figures() of several producers."""
    total = {'seconds': dict.fromkeys(PHASES, 0.0),
             'calls': dict.fromkeys(PHASES, 0), 'bytes': 0, 'loaded': {}}
    for f in figures:
        for name, n in f.get('loaded', {}).items():
            total['loaded'][name] = total['loaded'].get(name, 0) + n
        for key in PHASES:
            total['seconds'][key] += f['seconds'].get(key, 0.0)
            total['calls'][key] += f['calls'].get(key, 0)
        total['bytes'] += f['bytes']
    return total


def timeCommitLock():
    """Make ZEO's LockManager add up how long its lock was held (into its
    storage's stats, which ``server_status()`` returns)."""
    from ZEO.StorageServer import LockManager
    locked, unlocked = LockManager._locked, LockManager._unlocked

    def _locked(self, zs):
        self._heldSince = time.perf_counter()
        return locked(self, zs)

    def _unlocked(self, zs):
        since = getattr(self, '_heldSince', None)
        if since is not None:
            stats = self.stats
            stats.lock_held = getattr(stats, 'lock_held', 0.0) + \
                time.perf_counter() - since
            stats.lock_taken = getattr(stats, 'lock_taken', 0) + 1
            self._heldSince = None
        return unlocked(self, zs)
    LockManager._locked, LockManager._unlocked = _locked, _unlocked

    # Where the hold goes: the vote's work on the server (under the lock),
    # the gap until the client's tpc_finish arrives (the reply's way back,
    # the client's turn-around, the request's way there), the finish.
    from ZEO.StorageServer import ZEOStorage
    vote, finish = ZEOStorage._vote, ZEOStorage.tpc_finish

    def add(stats, key, seconds):
        setattr(stats, key, getattr(stats, key, 0.0) + seconds)

    def _vote(self, *args, **kw):
        started = time.perf_counter()
        try:
            return vote(self, *args, **kw)
        finally:
            self._votedAt = time.perf_counter()
            add(self.stats, 'lock_vote', self._votedAt - started)

    def tpc_finish(self, *args, **kw):
        started = time.perf_counter()
        voted = getattr(self, '_votedAt', None)
        if voted is not None:
            add(self.stats, 'lock_gap', started - voted)
            self._votedAt = None
        try:
            return finish(self, *args, **kw)
        finally:
            add(self.stats, 'lock_finish', time.perf_counter() - started)
    ZEOStorage._vote, ZEOStorage.tpc_finish = _vote, tpc_finish


def zeoServerCommand(port, path):
    """The command line of a ZEO server whose commit lock is timed."""
    import sys
    return [sys.executable, os.path.abspath(__file__), 'zeoserver', '-a',
            '127.0.0.1:%d' % port, '-f', path]


if __name__ == '__main__':
    import sys
    if sys.argv[1:2] == ['zeoserver']:
        timeCommitLock()
        from ZEO import runzeo
        runzeo.main(sys.argv[2:])

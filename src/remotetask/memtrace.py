"""Memory snapshots of a running worker, for finding what makes it grow.

Off unless the environment names a directory::

    REMOTETASK_TRACEMALLOC=/tmp/snaps remotetask worker ...

Then, each time the worker receives SIGUSR1, it writes into that
directory

- ``snapshot-N.tracemalloc``: ``tracemalloc.Snapshot.dump()``, with the
  frames of tracemalloc and of this module filtered out (not with 0
  frames);
- ``snapshot-N.json``: what is cheap to count and names the usual
  suspects: the process's RSS, the ZODB connection caches of the database
  (objects, non-ghosts, estimated bytes, the limits), the ZEO client cache
  (records, bytes in use, its maximum) and the counts of the most common
  Python object types.

``N`` counts from 1.  The first SIGUSR1 also starts ``tracemalloc``
(``REMOTETASK_TRACEMALLOC_FRAMES`` frames per traceback, default 5; 0: no
tracing, the counts only): tracing from the start slows a worker of no-op
jobs twenty times or more, and what matters is what was allocated after a
point and is still there later.  So the snapshot of a later dump holds
just that, and ``compare(old, new)`` prints the top growth between two
dumps by traceback (``bench/soak.py --tracemalloc`` uses it).  When the
variable is not set nothing is imported, started or installed: the normal
path pays nothing.  Tracing slows the worker and takes memory of its own,
so RSS figures are taken from runs without it.
"""
import collections
import gc
import json
import logging
import os
import signal
import threading
import tracemalloc

log = logging.getLogger('remotetask.worker')

ENV = 'REMOTETASK_TRACEMALLOC'
ENV_FRAMES = 'REMOTETASK_TRACEMALLOC_FRAMES'

#: Python object types counted in each dump (the most numerous).
TYPES = 25


def installFromEnvironment(db, environ=os.environ):
    """Install the SIGUSR1 handler if ``ENV`` names a
    directory; return the ``Tracer`` or None.  Call from the main thread.

    :raises ValueError: for a frame count that is not a whole number >= 0.
    """
    directory = environ.get(ENV)
    if not directory:
        return None
    frames = environ.get(ENV_FRAMES) or '5'
    try:
        frames = int(frames)
    except ValueError:
        frames = -1
    if frames < 0:
        raise ValueError('%s must be a whole number >= 0, not %r'
                         % (ENV_FRAMES, environ.get(ENV_FRAMES)))
    tracer = Tracer(db, directory, frames)
    tracer.install()
    return tracer


class Tracer:
    """Dumps snapshots of ``db``'s process into ``directory``."""

    def __init__(self, db, directory, frames=5):
        self.db = db
        self.directory = directory
        self.frames = frames
        self.count = 0
        self._lock = threading.Lock()

    def install(self):
        os.makedirs(self.directory, exist_ok=True)
        signal.signal(signal.SIGUSR1, lambda signum, frame: self.dump())
        log.warning('SIGUSR1 dumps a memory snapshot into %s (tracemalloc '
                    '%s from the first)', self.directory,
                    'with %d frames' % self.frames if self.frames
                    else 'off: counts only')

    def dump(self):
        """Write the next snapshot and its counts; return their base path."""
        with self._lock:
            self.count += 1
            base = os.path.join(self.directory, 'snapshot-%d' % self.count)
            info = {'rss_mb_before_gc': rssMB(),
                    'gc_collected': gc.collect()}
            if tracemalloc.is_tracing():
                snapshot = tracemalloc.take_snapshot().filter_traces(
                    [tracemalloc.Filter(False, tracemalloc.__file__),
                     tracemalloc.Filter(False, __file__)])
                snapshot.dump(base + '.tracemalloc')
            info.update(counts(self.db))
            info['traced'] = tracemalloc.get_traced_memory()[0]
            if self.frames and not tracemalloc.is_tracing():
                # After the counts: the next dumps hold what was allocated
                # from now on and is still there.
                tracemalloc.start(self.frames)
                tracemalloc.take_snapshot().dump(base + '.tracemalloc')
            with open(base + '.json', 'w') as f:
                json.dump(info, f, indent=1, sort_keys=True)
            log.warning('memory snapshot %s written', base)
            return base


def rssMB(pid=None):
    """Resident set size of process ``pid`` (default: this one) in MB, from
    /proc (None where there is no /proc)."""
    try:
        with open('/proc/%s/status' % (pid or 'self')) as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def connectionCaches(db):
    """One dict per open or pooled connection of ``db``: its cache's
    objects, non-ghosts, estimated bytes, and the database's limits."""
    caches = []
    for conn in list(db.pool.all):
        cache = conn._cache
        caches.append({
            'objects': len(cache),
            'non_ghosts': cache.cache_non_ghost_count,
            'estimated_bytes': cache.total_estimated_size,
            'opened': conn.opened is not None,
        })
    return {'connections': caches,
            'cache_size': db.getCacheSize(),
            'cache_size_bytes': db.getCacheSizeBytes()}


def zeoCache(storage):
    """The ZEO client cache of ``storage`` (records, bytes used, maximum),
    or None if it is not a ZEO client."""
    cache = getattr(storage, '_cache', None)
    if cache is None or not hasattr(cache, 'maxsize'):
        return None
    return {'records': len(cache), 'max_bytes': cache.maxsize,
            'current_index': len(cache.current),
            'noncurrent_index': len(cache.noncurrent),
            'file': getattr(cache, 'path', None) or 'temporary'}


def counts(db):
    """The JSON-able counts written next to each snapshot."""
    types = collections.Counter(type(o).__name__ for o in gc.get_objects())
    return {'rss_mb': rssMB(),
            'connection_caches': connectionCaches(db),
            'zeo_cache': zeoCache(db.storage),
            'gc_objects': len(gc.get_objects()),
            'types': types.most_common(TYPES)}


def compare(old, new, top=15, key='traceback'):
    """Lines describing the top growth from dump ``old`` to dump ``new``
    (base paths as ``Tracer.dump`` returns them; [] without tracing)."""
    if not os.path.exists(old + '.tracemalloc'):
        return []
    before = tracemalloc.Snapshot.load(old + '.tracemalloc')
    after = tracemalloc.Snapshot.load(new + '.tracemalloc')
    stats = after.compare_to(before, key)
    lines = ['traced memory %+.1f MB in all' % (
        sum(s.size_diff for s in stats) / 1048576.0)]
    for stat in stats[:top]:
        lines.append('%+9.1f KB %+8d blocks  (now %.1f KB)' % (
            stat.size_diff / 1024.0, stat.count_diff, stat.size / 1024.0))
        frames = stat.traceback.format(limit=None if key == 'traceback'
                                       else 1, most_recent_first=True)
        lines.extend('    ' + line.strip() for line in frames
                     if line.strip() and not line.startswith('    '))
    return lines

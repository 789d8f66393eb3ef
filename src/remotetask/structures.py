"""The persistent structures behind the service: the queue and job ids.

Both are built so that concurrent transactions (several producers, several
workers, over ZEO or RelStorage) rarely write the same object, and resolve
the conflicts that remain with BTrees' own conflict resolution, which the
ZEO server can run without importing remotetask.  docs/design.md explains
the choices.
"""
import bisect
import heapq
import os
import random
import threading

import persistent
import transaction
from ZODB.utils import z64
from BTrees.Length import Length
from BTrees.LOBTree import LOTreeSet
from BTrees.OOBTree import OOTreeSet

#: Number of queue partitions.  A job goes to partition ``id % PARTITIONS``.
PARTITIONS = 16
#: Number of lanes: a thread's lane says where its spread claims start.
LANES = 64
#: Ids a process takes from the shared counter at a time.
BLOCK = 1000
#: A spread claim takes one of the first WINDOW due entries of a partition
#: at random, rather than the first (see ``JobQueue.due``).
WINDOW = 8

_INF = float('inf')
#: The first key of every queue partition, never removed (ids start at 1).
_FIRST = (-_INF, 0)


class IdIndex(LOTreeSet):
    """A set of job ids (a status index) with big leaves.

    Ids are appended at the end of a status index and removed mostly from
    its beginning; each time a bucket splits or empties, BTrees rewrite its
    parent node, which they can not merge with a concurrent change of that
    bucket: a ConflictError.  Leaves of 500 ids (BTrees' default is 60)
    make those events 8 times rarer; a leaf of ids is still small (4 KB).
    """
    max_leaf_size = 500


class WaitingIndex(IdIndex):
    """The index of a waiting status (queued, delayed...): leaves of 120.
    Every ``add()`` rewrites its last leaf, so its size is paid per job
    added one per transaction; claims take their ids from its first
    leaves, which the sentinel and the claims' spread keep apart."""

    max_leaf_size = 120


def prefetcher(jar):
    """A function ``load(objects)`` that asks ``jar``'s (a ZODB
    connection's) storage to load ``objects`` ahead, in one go, or None if
    the storage reads locally (FileStorage, MappingStorage: nothing to
    gain, and callers skip the work of finding what to load).

    Over ZEO and RelStorage the loads an operation is about to make one
    after the other (a round trip each) go out together and do not block.
    Objects not stored yet, and objects loaded already, are skipped.

    It asks the connection's storage directly: ``Connection.prefetch``
    swaps itself for a no-op, for good, the first time it is called while
    a savepoint is active (the savepoint's temporary storage has no
    ``prefetch``), and ``service.run`` takes a savepoint per job.
    """
    storage = getattr(jar, '_normal_storage', None)
    # ZODB wraps a storage without MVCC of its own (ZEO, FileStorage) in an
    # adapter that always has a ``prefetch``; ask the storage under it.
    base = getattr(storage, '_storage', storage)
    if getattr(base, 'prefetch', None) is None:
        return None
    fetch = storage.prefetch

    def load(objects):
        # Only ghosts: an object loaded in this connection is up to date
        # (the transaction's invalidations turned stale ones into ghosts).
        oids = [ob._p_oid for ob in objects
                if ob is not None and ob._p_oid is not None
                and ob._p_changed is None]
        if oids:
            fetch(oids)
    return load


def prefetch(jar, objects):
    """Load ``objects`` ahead if ``jar``'s storage can (see prefetcher)."""
    load = prefetcher(jar)
    if load is not None:
        load(objects)


def _children(tree):
    """A loaded BTree's ``(child0, key1, child1, ...)`` and first bucket,
    or None if it is empty or keeps its one bucket inline."""
    state = tree.__getstate__()
    if not state or len(state) < 2:
        return None
    return state


def leaves(tree, keys):
    """The children of a loaded BTree (or TreeSet) ``tree`` that hold
    ``keys``, or would: ghosts to prefetch before the keys are read or
    changed.  Only the first level is seen (it is the whole tree up to a
    few thousand keys); a tree that keeps its one bucket inline has
    none."""
    state = _children(tree)
    if state is None:
        return []
    items = state[0]
    separators = items[1::2]
    found = []
    for key in keys:
        child = items[2 * bisect.bisect_right(separators, key)]
        if all(child is not f for f in found):
            found.append(child)
    return found


def firstLeaf(tree):
    """The first bucket of a loaded BTree, where its smallest keys are,
    or None if the tree keeps its one bucket inline."""
    state = _children(tree)
    return None if state is None else state[1]


class JobQueue(persistent.Persistent):
    """Due-ordered queue of job ids, split into partitions.

    Each partition is an ``OOTreeSet`` of ``(eta, jobid)`` keys, so the
    earliest due job of a partition is its ``minKey()``, delayed jobs need
    no separate schedule, and removing a cancelled job costs O(log n).
    Producers spread over the partitions by job id; workers start from
    different partitions (``start``), so two workers rarely remove keys from
    the same bucket.  ``__len__`` is a ``BTrees.Length``.

    Each partition holds the never-removed key ``_FIRST`` before any entry,
    so taking the earliest entry never removes a bucket's first key nor
    empties the bucket: the two changes BTrees can not merge with a
    concurrent add to the same bucket.
    """

    def __init__(self, partitions=PARTITIONS):
        self._parts = tuple(OOTreeSet() for _ in range(partitions))
        for part in self._parts:
            part.insert(_FIRST)
        self._length = Length()

    def _entries(self, part, upto=None):
        return part.keys(min=_FIRST, max=upto, excludemin=True)

    def partitionOf(self, jobid):
        """The number of the partition that holds ``jobid``'s entry."""
        return jobid % len(self._parts)

    def _part(self, jobid):
        return self._parts[self.partitionOf(jobid)]

    def put(self, jobid, eta):
        if self._part(jobid).insert((eta, jobid)):
            self._length.change(1)

    def remove(self, jobid, eta):
        """Remove an entry; return False if it was not there."""
        try:
            self._part(jobid).remove((eta, jobid))
        except KeyError:
            return False
        self._length.change(-1)
        return True

    def __len__(self):
        return self._length()

    def __iter__(self):
        """All ``(eta, jobid)`` entries in due order."""
        return heapq.merge(*[self._entries(p) for p in self._parts])

    def due(self, now, limit=1, start=None):
        """Up to ``limit`` entries due at ``now``, without removing them.

        ``start`` None: strictly in due order across partitions.  Else start
        at partition ``start`` and go round, taking due entries from each in
        turn (what concurrent workers do), each one picked at random among
        the first ``WINDOW`` due entries of its partition: BTrees can not
        merge a concurrent change of a bucket with the removal of the
        bucket's first key, so workers that all took the head of a
        partition would conflict with each other and with producers.
        """
        upto = (now, _INF)
        if start is None:
            found = []
            for key in heapq.merge(*[self._entries(p, upto)
                                     for p in self._parts]):
                found.append(key)
                if len(found) >= limit:
                    break
            return found
        n = len(self._parts)
        # Go round in a stride of this thread's own (odd: every partition
        # is visited), so that workers whose partitions run dry do not all
        # move on to the same next ones.
        step = stride(n)
        found = []
        for i in range(n):
            part = self._parts[(start + i * step) % n]
            window = []
            for key in self._entries(part, upto):
                window.append(key)
                if len(window) >= limit + WINDOW - 1:
                    break
            while window and len(found) < limit:
                # Not always the first: removing a bucket's first key
                # conflicts with any concurrent change of that bucket.
                found.append(window.pop(_rng.randrange(
                    min(len(window), WINDOW))))
            if len(found) >= limit:
                return found
        return found

    def oldest(self):
        """The entry due first, or None."""
        firsts = []
        for part in self._parts:
            for key in self._entries(part):
                firsts.append(key)
                break
        return min(firsts) if firsts else None

    def hasDue(self, now):
        oldest = self.oldest()
        return oldest is not None and oldest[0] <= now


#: The key a hot status index always holds (job ids start at 1).
SENTINEL = 0


class IdsView:
    """The ids in a status index that holds ``SENTINEL``, without it: what
    ``ITaskService.jobIds()`` returns for the hot statuses.  Supports what
    readers of a BTrees set use (iteration, ``in``, ``len``, ``keys(min,
    max)``, ``minKey``/``maxKey``); ``tree`` is the index itself (for
    ``intersection`` with sets of job ids, which never hold the sentinel).
    """

    def __init__(self, tree):
        self.tree = tree

    def keys(self, min=None, max=None, excludemin=False, excludemax=False):
        if min is None or min < SENTINEL or (min == SENTINEL
                                             and not excludemin):
            min, excludemin = SENTINEL, True
        return self.tree.keys(min=min, max=max, excludemin=excludemin,
                              excludemax=excludemax)

    def __iter__(self):
        return iter(self.keys())

    def __len__(self):
        return len(self.tree) - 1

    def __bool__(self):
        return len(self) > 0

    def __contains__(self, jobid):
        return jobid != SENTINEL and jobid in self.tree

    def minKey(self, min=None):
        keys = self.keys(min=min)
        if not keys:
            raise ValueError('empty')
        return keys[0]

    def maxKey(self, max=None):
        key = self.tree.maxKey() if max is None else self.tree.maxKey(max)
        if key == SENTINEL:
            raise ValueError('no key satisfies the conditions')
        return key


class _Counter(persistent.Persistent):
    value = 0


class IdAllocator(persistent.Persistent):
    """Hands out job ids 1, 2, 3 ... in blocks.

    Each process takes blocks of ids from a shared counter in short
    transactions of its own (on a connection of its own), and hands them
    out from memory to all its threads.  So adding a job writes no shared
    object, concurrent producers never conflict over ids, and the counter
    is written once per block.  Blocks grow from 1 id to ``BLOCK`` ids
    (1, 2, 4 ... 1000): a command that adds one job takes one id, a busy
    producer touches the counter once per thousand jobs.  Ids are unique
    and increase within a process; they are not contiguous across
    processes (a process that ends leaves the rest of its block unused, and
    an aborted transaction leaves a gap).

    Until the service is committed to a database (detached, or added in
    the current transaction) blocks are taken in the current transaction.
    """

    def __init__(self):
        self._blocks = _Counter()   # the last id handed out to a block

    def allocate(self):
        jar = self._p_jar
        counter = self._blocks
        counter._p_activate()       # a ghost's serial is not known yet
        oid = counter._p_oid
        if jar is None or oid is None or counter._p_serial == z64:
            # Not committed yet (a savepoint gives it an oid, but no other
            # connection can load it before the commit).
            block = getattr(self, '_v_block', None)
            if block is None or block[0] >= block[1]:
                size = _nextSize(block)
                first = self._blocks.value + 1
                self._blocks.value += size
                block = self._v_block = [first, first + size, None, size]
            return _take(block)
        return _allocateFromBlock(jar.db(), oid)


_blockLock = threading.Lock()


def _nextSize(block):
    return 1 if block is None else min(BLOCK, block[3] * 2)


def _take(block):
    jobid = block[0]
    block[0] += 1
    return jobid


def _allocateFromBlock(db, oid):
    pid = os.getpid()
    with _blockLock:
        cache = db.__dict__.setdefault('_remotetask_idblocks', {})
        block = cache.get(oid)
        if block is not None and block[2] != pid:
            block = None            # inherited through a fork: not ours
        if block is None or block[0] >= block[1]:
            size = _nextSize(block)
            first = _reserveBlock(db, oid, size)
            block = cache[oid] = [first, first + size, pid, size]
        return _take(block)


def _reserveBlock(db, oid, size):
    """Take ``size`` ids from the counter ``oid``, committed at once."""
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        for attempt in tm.attempts(50):
            with attempt:
                counter = conn.get(oid)
                first = counter.value + 1
                counter.value += size
        return first
    finally:
        conn.close()


_local = threading.local()
_rng = random.SystemRandom()


def _thread():
    """This thread's state (a lane number, where its claims start),
    started afresh in a forked process."""
    pid = os.getpid()
    if getattr(_local, 'pid', None) != pid:
        _local.pid = pid
        _local.lane = _rng.randrange(1 << 30)
        _local.part = None
    return _local


def laneNumber(lanes=LANES):
    """A number fixed for this process and thread, different (most likely)
    from other processes' and threads'; recomputed after a fork."""
    return _thread().lane % lanes


def randomPartition(partitions=PARTITIONS):
    """A partition drawn at random."""
    return _rng.randrange(partitions)


def stride(partitions=PARTITIONS):
    """This thread's step through the partitions: an odd number, so with
    a power of two of partitions it visits them all."""
    if partitions & (partitions - 1):
        return 1
    return (laneNumber() % (partitions // 2)) * 2 + 1


def claimPartition(partitions=PARTITIONS):
    """Where this thread's next spread claim starts: the partition where its
    last claim found jobs, or one drawn at random at first and after a
    claim of this thread conflicted (``movePartition``).  Two workers that
    claim from one partition at the same time take the same entries, and
    one of them conflicts; workers that stay where they found work, and
    move when they collide, end up apart."""
    state = _thread()
    part = getattr(state, 'part', None)
    if part is None or part >= partitions:
        part = state.part = randomPartition(partitions)
    return part


def keepPartition(part):
    """Start this thread's next claim at ``part`` (see claimPartition)."""
    _thread().part = part


def movePartition():
    """This thread's claim conflicted: start the next one elsewhere."""
    _thread().part = None

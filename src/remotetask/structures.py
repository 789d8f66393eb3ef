"""The persistent structures behind the service: job ids, the jobs, the
status and task indexes, and the queue.

The first constraint: **an add writes only objects that no concurrent add
writes.**  Every thread that adds jobs holds a *lane* (one of
``PARTITIONS``, different from the lanes of the other threads and
processes that add at the same time) and numbers its jobs with ids of its
lane's stripes (``partitionOf``); the jobs, the indexes and the queue are
split into one partition per lane.  So concurrent adds write different
BTrees (besides ``BTrees.Length`` counters, which merge), and workers that
take jobs out meet producers only in buckets that BTrees merge.  Readers
see one sorted collection through a lazy k-way merge of the partitions
(``Merged.keys``), which loads a bounded number of buckets per page.
docs/design.md explains the choices and the measurements behind them.
"""
import bisect
import heapq
import os
import random
import threading
import weakref

import persistent
import transaction
from ZODB.POSException import ConflictError
from ZODB.utils import z64
from BTrees.Length import Length
from BTrees.LOBTree import LOBTree, LOSet, LOTreeSet, multiunion
from BTrees.LOBTree import intersection as _intersection
from BTrees.OOBTree import OOTreeSet

#: Number of partitions (and of producers' lanes) of the jobs, indexes and
#: queue.  A job goes to partition ``partitionOf(id)``.
PARTITIONS = 16
#: Ids come in stripes of STRIPE ids; stripe ``s`` belongs to lane
#: ``s % PARTITIONS``.  (1000: an id's lane shows in its thousands.)
STRIPE = 1000
#: The queue has SPREAD partitions per lane (see JobQueue.partitionOf).
SPREAD = 4
#: A claiming thread's number, which says its stride through the queue.
LANES = 64
#: The most ids a thread takes from its lane's counter at a time.
BLOCK = 1000
#: A spread claim takes one of the first WINDOW due entries of a partition
#: at random, rather than the first (see ``JobQueue.due``).
WINDOW = 8

_INF = float('inf')
_max = max           # (methods below have an argument named max)


def partitionOf(jobid, partitions=PARTITIONS):
    """The partition (and lane) of ``jobid``: that of its stripe."""
    return (jobid // STRIPE) % partitions


def spreadPartitionOf(jobid, partitions):
    """The partition of ``jobid`` in a structure of ``partitions``
    partitions: with ``SPREAD`` (or k) per lane (``PARTITIONS * k``), the
    queue's (``lane * k + id % k``, see ``JobQueue.partitionOf``), so that
    the waiting and processing indexes split like the queue and a claim
    slot's ids lie in index partitions of its own too; else the lane's."""
    spread = _perLane(partitions)
    if spread:
        return partitionOf(jobid) * spread + jobid % spread
    return partitionOf(jobid, partitions)


def _perLane(partitions):
    """How many partitions each lane has in a structure of ``partitions``
    (``PARTITIONS * k`` for k > 1: k), else None (one per lane)."""
    if partitions > PARTITIONS and partitions % PARTITIONS == 0:
        return partitions // PARTITIONS
    return None

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


def roots(tree, keys):
    """The BTrees that hold ``keys`` in ``tree``: its partitions that do
    if it is ``Partitioned``, else ``[tree]``: to prefetch before
    ``leaves``."""
    if isinstance(tree, Merged):
        found = []
        for key in keys:
            part = tree._partFor(key)
            if part is not None and all(part is not f for f in found):
                found.append(part)
        return found
    return [tree]


def leaves(tree, keys):
    """The children of a loaded BTree (or TreeSet) ``tree`` that hold
    ``keys``, or would: ghosts to prefetch before the keys are read or
    changed.  Only the first level is seen (it is the whole tree up to a
    few thousand keys); a tree that keeps its one bucket inline has
    none.  For a ``Partitioned`` ``tree``, the children in the partitions
    that hold ``keys`` (see ``roots``; those are loaded if they are
    not)."""
    if isinstance(tree, Merged):
        found = []
        for part in roots(tree, keys):
            found.extend(leaves(part, [k for k in keys
                                       if tree._partFor(k) is part]))
        return found
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


#: A claim that takes entries of another claim slot's partition (``due``
#: with a ``home``: the slot's own have none) leaves the first
#: ``STEAL_CLEAR`` buckets of that partition to its owner, whose claims
#: take from its beginning (a claim of 50 entries spans 4 buckets of 15,
#: the size of a queue partition's buckets filled in due order).
STEAL_CLEAR = 5

#: Slots taking from the same partition start at one of its last
#: ``STEAL_SPREAD`` buckets, at random.
STEAL_SPREAD = 4


def stolen(tree, upto, wanted):
    """Up to ``wanted`` keys ``<= upto`` of ``tree`` (a queue partition, a
    loaded ``OOTreeSet``) taken from its end, in no particular order, for
    a claim of another slot than the partition's owner (``owner``): the
    owner removes keys from the beginning, so the two change different
    buckets, which never conflicts.  Each bucket keeps its first key
    (removing it, or emptying the bucket, would rewrite the tree node or
    conflict with any change of the bucket), and the first
    ``STEAL_CLEAR`` buckets are left alone.  None if the partition is
    too short for that (fewer buckets): the caller takes near the
    beginning, as before claim slots.  The entries a stealer leaves are
    the oldest: the owner takes them (or, if it is gone, the others once
    the partition is short or the slots were counted again), so none is
    overtaken for ever."""
    found = []
    _stealFrom(tree, upto, wanted, found, STEAL_CLEAR)
    return found or None


def _stealFrom(tree, upto, wanted, found, clear):
    """Add to ``found`` keys of ``tree``'s buckets from the end (see
    ``stolen``), skipping its first ``clear`` buckets; returns how many
    buckets ``tree`` has at its first level (for the caller's count)."""
    state = _children(tree)
    if state is None:
        return 1
    items = state[0]
    children = items[::2]
    if len(children) <= clear:
        return len(children)
    try:
        last = tree.maxKey(upto)
    except ValueError:
        return len(children)
    end = bisect.bisect_right(items[1::2], last)
    # Start at one of the last STEAL_SPREAD buckets at random (several
    # slots may take from the same partition: not all from the same
    # bucket), go towards the beginning, then to those after the start.
    start = end - _rng.randrange(min(STEAL_SPREAD, end + 1))
    order = list(range(start, -1, -1)) + list(range(start + 1, end + 1))
    # Load those buckets at once (over ZEO: one round trip).
    prefetch(tree._p_jar, [children[i] for i in order[:STEAL_SPREAD]
                           if i >= clear])
    for i in order:
        if len(found) >= wanted:
            break
        child = children[i]
        if isinstance(child, OOTreeSet):
            # A deep partition (thousands of entries): its subtrees.
            _stealFrom(child, upto, wanted, found, clear if i == 0 else 0)
        elif i >= clear:
            keys = list(child.keys(max=upto))[1:]
            while keys and len(found) < wanted:
                found.append(keys.pop())
    return len(children)


def _bucketOf(tree, key):
    """The bucket (an ``OOSet``) of a two-level ``tree`` that holds
    ``key`` if ``key`` is neither its first nor its only key, else None
    (remove it through the tree)."""
    state = _children(tree)
    if state is None:
        return None
    items = state[0]
    bucket = items[2 * bisect.bisect_right(items[1::2], key)]
    if isinstance(bucket, OOTreeSet) or len(bucket) < 2 \
            or bucket.minKey() == key:
        return None
    return bucket


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
    A job's entry goes to the partition of its id's lane, so concurrent
    producers add to partitions of their own; workers start from
    different partitions (``start``), so two workers rarely remove keys from
    the same bucket.  ``__len__`` is a ``BTrees.Length``.

    Each partition holds the never-removed key ``_FIRST`` before any entry,
    so taking the earliest entry never removes a bucket's first key nor
    empties the bucket: the two changes BTrees can not merge with a
    concurrent add to the same bucket.
    """

    def __init__(self, partitions=PARTITIONS * SPREAD):
        self._parts = tuple(OOTreeSet() for _ in range(partitions))
        for part in self._parts:
            part.insert(_FIRST)
        # One counter per producers' lane: an add changes its lane's only.
        self._counters = tuple(Length() for _ in range(PARTITIONS))

    def _entries(self, part, upto=None):
        return part.keys(min=_FIRST, max=upto, excludemin=True)

    def partitionOf(self, jobid):
        """The number of the partition that holds ``jobid``'s entry: one of
        the ``SPREAD`` partitions of the id's lane (``structures.
        partitionOf``), so that a producer adds to partitions of its own,
        and workers taking the jobs of one producer find them in several
        partitions, not all in one."""
        n = len(self._parts)
        if self._counters is None:
            return jobid % n            # an older layout (see relayout)
        return spreadPartitionOf(jobid, n)

    def _part(self, jobid):
        return self._parts[self.partitionOf(jobid)]

    _counters = None    # a queue of an older version: one _length

    def _counter(self, jobid):
        counters = self._counters
        if counters is None:
            return self._length
        return counters[partitionOf(jobid, len(counters))]

    def relayout(self):
        """Bring a queue of an older layout (partitions by ``id % n``, one
        length) to the current one, keeping its entries (see
        ``remotetask.layout``)."""
        if self._counters is not None:
            return
        entries = list(self)
        self._parts = tuple(OOTreeSet([_FIRST])
                            for _ in range(PARTITIONS * SPREAD))
        self._counters = tuple(Length() for _ in range(PARTITIONS))
        self.__dict__.pop('_length', None)
        for eta, jobid in entries:
            self.put(jobid, eta)
        self._p_changed = True

    def counters(self):
        """The ``BTrees.Length`` objects that every put and remove changes
        (one per producers' lane): what a worker watches for new jobs."""
        if self._counters is None:
            return [self._length]
        return list(self._counters)

    def put(self, jobid, eta):
        if self._part(jobid).insert((eta, jobid)):
            self._counter(jobid).change(1)

    def remove(self, jobid, eta):
        """Remove an entry; return False if it was not there.

        An entry that is not its bucket's first key (nor its only one) is
        removed from the bucket itself, not through the partition's tree:
        BTrees mark a tree read-current when a change goes through it, so
        that change would conflict with any concurrent rewrite of the
        tree's node (another worker's claim emptying one of its buckets
        at the partition's beginning, while this one takes from its end:
        ``stolen``).  The tree's structure does not change either way."""
        key = (eta, jobid)
        part = self._part(jobid)
        try:
            bucket = _bucketOf(part, key)
            if bucket is not None:
                bucket.remove(key)
            else:
                part.remove(key)
        except KeyError:
            return False
        self._counter(jobid).change(-1)
        return True

    def __len__(self):
        return sum(counter() for counter in self.counters())

    def __iter__(self):
        """All ``(eta, jobid)`` entries in due order."""
        return heapq.merge(*[self._entries(p) for p in self._parts])

    def due(self, now, limit=1, start=None, home=None):
        """Up to ``limit`` entries due at ``now``, without removing them.

        ``start`` None: strictly in due order across partitions.  Else start
        at partition ``start`` and go round, taking due entries from each in
        turn (what concurrent workers do).  With ``home`` (a claiming
        thread's ``(slot, total)``, see ``setHome``) the partitions of that
        slot come first, their entries in due order: no other worker takes
        from them while it has its own.  Then (or without ``home``) the
        other partitions, in a stride of the thread's own, each entry
        picked at random among the first ``WINDOW`` due entries of its
        partition: BTrees can not merge a concurrent change of a bucket
        with the removal of the bucket's first key, so workers that all
        took the head of a partition would conflict with each other and
        with producers.
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
        order = [(start + i * step) % n for i in range(n)]
        if home is not None:
            own = [p for p in order if owner(p, home, n)]
            order = own + [p for p in order if not owner(p, home, n)]
        else:
            own = ()
        found = []
        for i, p in enumerate(order):
            window = []
            mine = i < len(own)
            for key in self._entries(self._parts[p], upto):
                window.append(key)
                if len(window) >= limit - len(found) + (
                        0 if mine else WINDOW - 1):
                    break
            if mine:
                found.extend(window)
                window = []
            elif home is not None and window:
                # Another slot's partition (its owner's went dry): take
                # from its end, away from where the owner takes.
                tail = stolen(self._parts[p], upto, limit - len(found))
                if tail is not None:
                    found.extend(tail)
                    window = []
            while window and len(found) < limit:
                # Not always the first: removing a bucket's first key
                # conflicts with any concurrent change of that bucket.
                found.append(window.pop(_rng.randrange(
                    min(len(window), WINDOW))))
            if len(found) >= limit:
                return found[:limit]
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


#: The key every partition of an id set holds and never loses (job ids
#: start at 1): the first key of its first bucket never moves and that
#: bucket never empties, the two changes BTrees can not merge with a
#: concurrent change of the bucket.  Readers never see it.
SENTINEL = 0


class Merged:
    """BTrees keyed by job id (``_parts``, one per partition), read as one.

    A key lives in the partition of its lane (``partitionOf``).  Reading
    in key order merges the partitions lazily: ``keys(min, max)`` starts
    a range search in each partition (one path of nodes and a bucket
    each) and ``heapq.merge`` takes keys from them as they are consumed,
    so a page of ``n`` keys loads ``n`` keys' worth of buckets plus about
    two objects per partition, whatever the size.  ``maxKey``/``minKey``
    ask every partition.  Lengths are summed (O(n), like a BTree's).
    """

    _parts = ()

    @property
    def partitions(self):
        return self._parts

    def _partFor(self, key):
        return self._parts[spreadPartitionOf(key, len(self._parts))]

    def _low(self, min, excludemin):
        return min, excludemin

    def _ranges(self, min, max, excludemin, excludemax, what='keys'):
        min, excludemin = self._low(min, excludemin)
        return [getattr(part, what)(min=min, max=max, excludemin=excludemin,
                                    excludemax=excludemax)
                for part in self._parts if part is not None]

    def keys(self, min=None, max=None, excludemin=False, excludemax=False):
        """The keys from ``min`` to ``max``, ascending (an iterator)."""
        return heapq.merge(*self._ranges(min, max, excludemin, excludemax))

    def __iter__(self):
        return self.keys()

    def __contains__(self, key):
        try:
            part = self._partFor(key)
            return key != SENTINEL and part is not None and key in part
        except TypeError:
            return False

    has_key = __contains__

    def __bool__(self):
        for key in self.keys():
            return True
        return False

    def __len__(self):
        return sum(len(part) for part in self._parts
                   if part is not None) - self._sentinels()

    def _sentinels(self):
        return 0

    def maxKey(self, max=None):
        found = []
        for part in self._parts:
            if part is None:
                continue
            try:
                key = part.maxKey() if max is None else part.maxKey(max)
            except ValueError:
                continue
            if key != SENTINEL or not isinstance(self, _Ids):
                found.append(key)
        if not found:
            raise ValueError('no key satisfies the conditions')
        return _max(found)

    def minKey(self, min=None):
        for key in self.keys(min=min):
            return key
        raise ValueError('no key satisfies the conditions')




class Partitioned(Merged, persistent.Persistent):
    """``PARTITIONS`` BTrees made by ``factory``, stored with it."""

    def __init__(self, factory, partitions=PARTITIONS):
        self._parts = tuple(factory() for _ in range(partitions))


class _Ids:
    """What sets of job ids whose partitions may hold ``SENTINEL`` add."""

    def _low(self, min, excludemin):
        if min is None or min < SENTINEL or (min == SENTINEL
                                             and not excludemin):
            return SENTINEL, True
        return min, excludemin

    def _sentinels(self):
        return sum(1 for part in self._parts
                   if part is not None and SENTINEL in part)

    def _writable(self, jobid):
        """The partition of ``jobid``, to write in."""
        part = self._partFor(jobid)
        if part is None:
            raise KeyError('no partition for job id %r' % (jobid,))
        return part

    def insert(self, jobid):
        """Add ``jobid``; return 1 if it was not there, else 0."""
        if jobid == SENTINEL:
            raise ValueError('job ids start at 1')
        return self._writable(jobid).insert(jobid)

    add = insert

    def remove(self, jobid):
        """Remove ``jobid``; KeyError if it is not there."""
        if jobid == SENTINEL:
            raise KeyError(jobid)
        part = self._partFor(jobid)
        if part is None:
            raise KeyError(jobid)
        part.remove(jobid)


class IdSetView(_Ids, Merged):
    """Sets of job ids, one per partition, read as one (not stored: what
    ``jobIds(task=...)`` returns for a task's partitions)."""

    def __init__(self, parts):
        self._parts = tuple(parts)


class IdSet(_Ids, Partitioned):
    """A set of job ids (a status or task index), partitioned by lane.

    Each partition is a ``factory()`` (an ``IdIndex`` or ``WaitingIndex``)
    holding ``SENTINEL``, which readers never see.  Two producers on
    different lanes write different partitions; a worker taking ids out
    of a partition a producer adds to changes other keys of the same
    buckets, which BTrees merge (never the first key: the sentinel).

    Partitions are made when their first id comes: until then a
    partition is None in ``_parts``, which readers skip, so a page does
    not load the persistent BTree of every unused partition (of 64, a
    service with 4 producers uses 16).  Making one writes the ``IdSet``;
    two transactions that each made different partitions merge
    (``_p_resolveConflict``).  A set stored before (every partition made)
    reads and writes as it did.
    """

    #: What makes a partition (None: a set stored before partitions were
    #: made lazily, all of them made already).
    _factory = None

    def __init__(self, factory=None, partitions=PARTITIONS):
        self._factory = factory or IdIndex
        self._parts = (None,) * partitions

    def _sentinels(self):
        return sum(1 for part in self._parts if part is not None)

    def _writable(self, jobid):
        n = spreadPartitionOf(jobid, len(self._parts))
        part = self._parts[n]
        if part is None:
            self.prepare(jobid)
            part = self._parts[n]
        return part

    def prepare(self, jobid):
        """Make the partitions of ``jobid``'s lane if they are not made
        yet: all ``k`` of them when the set has ``k`` per lane, so that a
        producer's later adds, whose ids fall in each of them, do not
        write the set again."""
        n = len(self._parts)
        if self._parts[spreadPartitionOf(jobid, n)] is not None:
            return
        spread = _perLane(n)
        if spread:
            first = partitionOf(jobid) * spread
            group = range(first, first + spread)
        else:
            group = [partitionOf(jobid, n)]
        parts = list(self._parts)
        for i in group:
            if parts[i] is None:
                parts[i] = (self._factory or IdIndex)()
                parts[i].insert(SENTINEL)
        self._parts = tuple(parts)

    def _p_resolveConflict(self, old, committed, new):
        """Merge two transactions that each made partitions (of None in
        ``old``) the other did not; anything else stays a conflict.  In
        these states the partitions are ``PersistentReference`` objects,
        compared by oid (their ``==`` raises on different objects)."""
        keys = set(old) | set(committed) | set(new)
        if keys != {'_parts', '_factory'} and keys != {'_parts'}:
            raise ConflictError
        if not (old.get('_factory') is committed.get('_factory')
                is new.get('_factory')):
            raise ConflictError
        base, mine, theirs = old['_parts'], committed['_parts'], new['_parts']
        if not len(base) == len(mine) == len(theirs):
            raise ConflictError
        merged = []
        for b, m, t in zip(base, mine, theirs):
            if b is None:
                if m is not None and t is not None and not _same(m, t):
                    raise ConflictError     # both made this partition
                merged.append(t if m is None else m)
            elif _same(b, m) and _same(b, t):
                merged.append(b)
            else:
                raise ConflictError
        state = dict(new)
        state['_parts'] = tuple(merged)
        return state


def _same(a, b):
    """True if ``a`` and ``b`` (persistent references in a conflict
    resolution's states, or None) are the same object."""
    if a is None or b is None:
        return a is b
    return a is b or (getattr(a, 'oid', None) is not None
                      and a.oid == getattr(b, 'oid', None)
                      and getattr(a, 'database_name', None)
                      == getattr(b, 'database_name', None)
                      and not getattr(a, 'weak', False)
                      and not getattr(b, 'weak', False))


class JobTree(Partitioned):
    """Job id -> ``Job``, partitioned by lane: what ``service.jobs`` is.

    A mapping with the reading API of an ``LOBTree`` (``[]``, ``get``,
    ``in``, ``len``, ``keys``/``values``/``items`` with ``min``/``max``,
    ``minKey``/``maxKey``), in id order across the partitions.
    """

    def __init__(self, factory=None, partitions=PARTITIONS):
        super().__init__(factory or LOBTree, partitions)

    def __getitem__(self, jobid):
        return self._partFor(jobid)[jobid]

    def get(self, jobid, default=None):
        try:
            return self._partFor(jobid).get(jobid, default)
        except TypeError:
            return default

    def __setitem__(self, jobid, job):
        self._partFor(jobid)[jobid] = job

    def __delitem__(self, jobid):
        del self._partFor(jobid)[jobid]

    def pop(self, jobid, *default):
        return self._partFor(jobid).pop(jobid, *default)

    def items(self, min=None, max=None, excludemin=False, excludemax=False):
        return heapq.merge(*self._ranges(min, max, excludemin, excludemax,
                                         'items'), key=_first)

    def values(self, min=None, max=None, excludemin=False,
               excludemax=False):
        for key, value in self.items(min, max, excludemin, excludemax):
            yield value


def _first(item):
    return item[0]


def intersect(ids, other):
    """The ids in both ``ids`` and ``other`` (each a BTrees set or mapping
    of job ids, or an ``IdSet`` or ``JobTree``), as a BTrees ``LOSet``.

    Partitioned sets are intersected partition by partition (with the
    matching partition when both are, else with the whole of the other),
    in C, and the results merged: the cost of one intersection of the
    whole sets."""
    a = ids._parts if isinstance(ids, Merged) else None
    b = other._parts if isinstance(other, Merged) else None
    if a is None and b is None:
        return LOSet(_intersection(ids, other))
    # (A partition not made yet is None: empty.  BTrees' intersection of
    # None and a set is the set: _of makes it empty.)
    if a is not None and b is not None and len(a) == len(b):
        pieces = [_of(x, y) for x, y in zip(a, b)]
    elif a is not None and b is not None and _laneMajor(a, b):
        # k partitions per lane against one per lane: each of the k with
        # its lane's (partition i of k * 16 is of lane i // k).
        k = len(a) // len(b)
        pieces = [_of(x, b[i // k]) for i, x in enumerate(a)]
    elif a is not None and b is not None and _laneMajor(b, a):
        k = len(b) // len(a)
        pieces = [_of(a[i // k], y) for i, y in enumerate(b)]
    elif a is not None:
        pieces = [_of(x, other) for x in a]
    else:
        pieces = [_of(ids, y) for y in b]
    found = multiunion([p for p in pieces if p is not None])
    if SENTINEL in found:
        found.remove(SENTINEL)
    return found


def _of(x, y):
    """BTrees' intersection, but None (nothing) if either is None (a
    partition not made yet)."""
    if x is None or y is None:
        return None
    return _intersection(x, y)


def _laneMajor(many, few):
    """True if ``many`` partitions split each of ``few`` lane partitions
    (``spreadPartitionOf``)."""
    return len(few) == PARTITIONS and _perLane(len(many)) is not None


def misplaced(tree):
    """Problems of a partitioned structure (a ``Partitioned`` or a
    ``JobQueue``), as strings: keys in the wrong partition, a partition
    of an ``IdSet`` or a queue without its sentinel.  Reads every key:
    for ``testing.checkConsistency``."""
    problems = []
    if isinstance(tree, JobQueue):
        parts = [(n, part, [k[1] for k in part if k != _FIRST])
                 for n, part in enumerate(tree._parts)]
        sentinel = [n for n, part in enumerate(tree._parts)
                    if _FIRST not in part]
    elif isinstance(tree, Merged):
        parts = [(n, part, [k for k in part.keys() if k != SENTINEL])
                 for n, part in enumerate(tree._parts) if part is not None]
        sentinel = [n for n, part in enumerate(tree._parts)
                    if isinstance(tree, IdSet) and part is not None
                    and SENTINEL not in part]
    else:
        return problems
    where = tree.partitionOf if isinstance(tree, JobQueue) else \
        (lambda i: spreadPartitionOf(i, len(tree._parts)))
    for n, part, ids in parts:
        wrong = [i for i in ids if where(i) != n]
        if wrong:
            problems.append('ids %s in partition %d' % (wrong[:10], n))
    if sentinel:
        problems.append('partitions %s lost their first key' % sentinel)
    return problems


class Tally(persistent.Persistent):
    """The number of jobs in each status, of one producers' lane.
    Concurrent changes merge: each adds its own to the other's."""

    def __init__(self):
        self.counts = {}

    def change(self, status, delta):
        counts = dict(self.counts)
        counts[status] = counts.get(status, 0) + delta
        self.counts = counts

    def _p_resolveConflict(self, old, committed, new):
        base = old.get('counts', {})
        mine = committed.get('counts', {})
        theirs = new.get('counts', {})
        merged = {}
        for status in set(base) | set(mine) | set(theirs):
            merged[status] = mine.get(status, 0) + theirs.get(status, 0) \
                - base.get(status, 0)
        state = dict(new)
        state['counts'] = merged
        return state


class Counts(persistent.Persistent):
    """The number of jobs in each status: a ``Tally`` per producers' lane,
    so that an add changes its lane's only.  ``count(status)`` sums them:
    O(PARTITIONS)."""

    def __init__(self, partitions=PARTITIONS):
        self._tallies = tuple(Tally() for _ in range(partitions))

    def tallyFor(self, jobid):
        return self._tallies[partitionOf(jobid, len(self._tallies))]

    def change(self, jobid, status, delta):
        self.tallyFor(jobid).change(status, delta)

    def count(self, status):
        return sum(t.counts.get(status, 0) for t in self._tallies)

    def counts(self):
        found = {}
        for tally in self._tallies:
            for status, n in tally.counts.items():
                found[status] = found.get(status, 0) + n
        return found


class _Counter(persistent.Persistent):
    value = 0


class IdAllocator(persistent.Persistent):
    """Hands out job ids by lane.

    Ids come in stripes of ``STRIPE``; stripe ``s`` belongs to lane
    ``s % PARTITIONS``, and each lane has a counter of its own (the next
    free id of the lane).  A thread that adds jobs takes a lane (a ticket
    from a shared counter, modulo ``PARTITIONS``: threads and processes
    that start one after the other get different lanes) and blocks of its
    lane's ids (1, 2, 4 ... ``BLOCK`` ids, never across a stripe), in
    short transactions of their own, on a connection of their own.  Its
    adds then write no counter, and its ids fall into partitions no other
    current producer writes (unless more than ``PARTITIONS`` threads add
    at once, or ticket numbers wrapped: then two share a lane, and their
    adds write the same BTrees, which BTrees mostly merge).

    A thread that ends hands its lane and the rest of its block to the
    next new thread of its process.  Ids are unique and increase within a
    thread; they are not contiguous (a process that ends leaves the rest
    of its block unused, an aborted transaction leaves a gap), and ids of
    different lanes are not in creation order (``job.created`` is).

    Until the service is committed to a database (detached, or added in
    the current transaction) ids come from lane 0 in the current
    transaction: 1, 2, 3 ...
    """

    _lanes = None       # an allocator of an older version: see _setup

    def __init__(self):
        self._setup()

    def _setup(self, start=1):
        """Lane counters whose ids start at ``start`` or later."""
        base = start // STRIPE
        lanes = []
        for lane in range(PARTITIONS):
            counter = _Counter()
            stripe = base + (lane - base) % PARTITIONS
            counter.value = max(start, stripe * STRIPE)
            lanes.append(counter)
        self._tickets = _Counter()
        self._tickets.value = base     # the first ticket: where ids go on
        self._lanes = tuple(lanes)

    def allocate(self):
        jar = self._p_jar
        self._p_activate()          # a ghost's serial is not known yet
        oid = self._p_oid
        if jar is None or oid is None or self._p_serial == z64:
            # Not committed yet (a savepoint gives it an oid, but no other
            # connection can load it before the commit).
            block = getattr(self, '_v_block', None)
            if block is None or block.next >= block.end:
                block = self._v_block = _reserve(self, 0, block)
            return block.take()
        return _allocateFromLane(jar.db(), oid)


class _Block:
    """A thread's lane and the ids it holds: ``next`` up to ``end``."""

    def __init__(self, lane, next, end, size, pid):
        self.lane = lane
        self.next = next
        self.end = end
        self.size = size
        self.pid = pid
        self.pool = None        # where to hand it on when the thread ends

    def take(self):
        jobid = self.next
        self.next += 1
        return jobid

    def __del__(self, getpid=os.getpid):
        # (Bound names only: at the interpreter's exit, module globals may
        # be gone already.)
        pool = self.pool
        if pool is not None and self.pid == getpid():
            self.pool = None
            pool.append(type(self)(self.lane, self.next, self.end, self.size,
                                   self.pid))


def _reserve(allocator, lane, block):
    """The next block of ``lane``'s ids, from its counter (in the current
    transaction of ``allocator``'s connection)."""
    if allocator._lanes is None:
        # Made by a version that numbered all jobs from one counter.
        allocator._setup(allocator._blocks.value + 1)
    size = 1 if block is None else min(BLOCK, block.size * 2)
    counter = allocator._lanes[lane]
    first = counter.value
    stripeEnd = (first // STRIPE + 1) * STRIPE
    end = min(first + size, stripeEnd)
    counter.value = end if end < stripeEnd else \
        end + (len(allocator._lanes) - 1) * STRIPE
    return _Block(lane, first, end, size, os.getpid())


_blockLock = threading.Lock()


def _pool(db, oid):
    """The blocks that ended threads of this process left (call with
    _blockLock held)."""
    pid = os.getpid()
    pools = db.__dict__.setdefault('_remotetask_lanes', {})
    pool = pools.get(oid)
    if pool is None or pool[0] != pid:
        pool = pools[oid] = (pid, [])       # new, or forked: start afresh
    return pool[1]


def _allocateFromLane(db, oid):
    state = _thread()
    # The block the thread took its last id from, if it has ids left: one
    # look-up per add rather than a weak dictionary's and the pool's.
    last = state.last
    if last is not None and last[1] == oid and last[0]() is db:
        block = last[2]
        if block.next < block.end:
            return block.take()
    blocks = state.blocks.setdefault(db, {})
    block = blocks.get(oid)
    if block is None:
        with _blockLock:
            free = _pool(db, oid)
            if free:
                block = blocks[oid] = free.pop()
                block.pool = free
    if block is None or block.next >= block.end:
        fresh = _reserveBlock(db, oid, block)
        if block is not None:
            block.pool = None           # used up: nothing to hand on
        with _blockLock:
            fresh.pool = _pool(db, oid)
        block = blocks[oid] = fresh
    state.last = (weakref.ref(db), oid, block)
    return block.take()


def _reserveBlock(db, oid, block):
    """A block of ids for this thread, committed at once: of its lane, or
    of a lane taken with a ticket if it has none yet."""
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        for attempt in tm.attempts(50):
            with attempt:
                allocator = conn.get(oid)
                lane = None if block is None else block.lane
                if lane is None:
                    if allocator._lanes is None:
                        allocator._setup(allocator._blocks.value + 1)
                    tickets = allocator._tickets
                    lane = tickets.value % len(allocator._lanes)
                    tickets.value += 1
                fresh = _reserve(allocator, lane, block)
        return fresh
    finally:
        conn.close()


_local = threading.local()
_rng = random.SystemRandom()


#: How many times this process was forked from its parent's (counted in
#: the child by ``os.register_at_fork``): each thread's state (``_thread``)
#: starts afresh in a forked child, without asking ``os.getpid()`` (a
#: system call) at each add and claim.
_forks = 0


def _forked():
    global _forks
    _forks += 1


os.register_at_fork(after_in_child=_forked)


def _thread():
    """This thread's state (a lane number, where its claims start, its
    blocks of ids), started afresh in a forked process."""
    if getattr(_local, 'forks', None) != _forks:
        _local.forks = _forks
        _local.lane = _rng.randrange(1 << 30)
        _local.part = None
        _local.home = None
        _local.blocks = weakref.WeakKeyDictionary()   # db -> {oid: _Block}
        _local.last = None      # (weakref to db, oid, _Block): see above
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


def owner(part, home, partitions):
    """True if partition ``part`` (of ``partitions``) belongs to the claim
    slot ``home``, a ``(slot, total)``: slot ``s`` of ``t`` owns the
    partitions ``p`` with ``p % t == s`` (with more slots than partitions,
    partition ``s % partitions``, shared)."""
    slot, total = home
    if total >= partitions:
        return part == slot % partitions
    return part % total == slot


def setHome(home):
    """This thread's claim slot, ``(slot, total)`` (slot ``slot`` of
    ``total`` worker threads of the service, numbered by the processors'
    order in the worker registry), or None (no slot: spread claims start
    at a partition drawn at random).  A thread with a slot claims from its
    own partitions (``owner``) first, in due order, and takes from the
    others' only when its own have no due entries: workers draining one
    backlog then remove entries from different partitions."""
    _thread().home = home


def home():
    """This thread's claim slot (see ``setHome``), or None."""
    return getattr(_thread(), 'home', None)


def claimPartition(partitions=PARTITIONS):
    """Where this thread's next spread claim starts: the partition where its
    last claim found jobs, or one drawn at random at first and after a
    claim of this thread conflicted (``movePartition``).  Two workers that
    claim from one partition at the same time take the same entries, and
    one of them conflicts; workers that stay where they found work, and
    move when they collide, end up apart."""
    state = _thread()
    part = getattr(state, 'part', None)
    slot = getattr(state, 'home', None)
    if slot is not None and (part is None or part >= partitions
                             or not owner(part, slot, partitions)):
        own = [p for p in range(partitions) if owner(p, slot, partitions)]
        part = state.part = own[_rng.randrange(len(own))]
    elif part is None or part >= partitions:
        part = state.part = randomPartition(partitions)
    return part


def keepPartition(part):
    """Start this thread's next claim at ``part`` (see claimPartition)."""
    _thread().part = part


def movePartition():
    """This thread's claim conflicted: start the next one elsewhere."""
    _thread().part = None

"""The worker registry: every running processor records itself in the
database, so that any process sees who works on a service.

A processor (of ``remotetask serve``, of ``remotetask worker``, or started
with ``service.startProcessing()``) registers when its clock thread first
runs, beats (updates its entry) every ``interval`` seconds from that thread,
and removes its entry when it stops cleanly.  A processor that died (SIGKILL,
power cut) stops beating: its entry counts as expired ``MISSED`` intervals
after its last heartbeat, is no longer listed, and is removed by the next
maintenance of any live processor.

One persistent object (``WorkerEntry``) per worker, held in a BTree on the
service (``service._workers``, created on first use): a heartbeat writes only
the worker's own entry, so it never conflicts with jobs, claims or other
workers' heartbeats; registering and removing write the BTree (rare).

Layers: this module knows the service only through the attributes above;
``service`` delegates ``workers()`` and the task-name check of ``add`` here.
"""
import os
import socket
import time
import uuid

import persistent
from BTrees.OOBTree import OOBTree

from remotetask.version import VERSION

#: Seconds between heartbeats (the default of a processor).
INTERVAL = 5.0

#: An entry expires this many intervals after its last heartbeat.
MISSED = 3

#: The fields of a worker's info (``WorkerEntry.info()``), in order.
FIELDS = ('id', 'host', 'pid', 'kind', 'version', 'started', 'heartbeat',
          'interval', 'concurrency', 'tasks', 'running', 'done', 'failed')


class WorkerEntry(persistent.Persistent):
    """What one processor records about itself."""

    def __init__(self, key, id, host, pid, kind, concurrency, tasks,
                 interval, now):
        self.key = key
        self.id = id
        self.host = host
        self.pid = pid
        self.kind = kind
        self.version = VERSION
        self.started = now
        self.heartbeat = now
        self.interval = interval
        self.concurrency = concurrency
        self.tasks = tuple(sorted(tasks))
        self.running = ()
        self.done = 0
        self.failed = 0

    def expires(self):
        """Epoch seconds when this entry counts as dead."""
        return self.heartbeat + MISSED * self.interval

    def alive(self, now=None):
        return (time.time() if now is None else now) < self.expires()

    def info(self):
        data = {name: getattr(self, name) for name in FIELDS}
        data['tasks'] = list(self.tasks)
        data['running'] = list(self.running)
        data['expires'] = self.expires()
        return data


def _container(service, create=False):
    workers = getattr(service, '_workers', None)
    if workers is None and create:
        # Written once per service (the service object itself changes).
        workers = service._workers = OOBTree()
    return workers


def entries(service, now=None, expired=False):
    """The live ``WorkerEntry``s of ``service`` (also the expired ones
    if ``expired``), by worker id."""
    workers = _container(service)
    if workers is None:
        return []
    now = time.time() if now is None else now
    found = [e for e in workers.values() if expired or e.alive(now)]
    return sorted(found, key=lambda e: (e.id, e.started))


def workers(service, now=None):
    """The live workers of ``service``: a list of dicts (``FIELDS`` and
    ``expires``), sorted by id."""
    return [e.info() for e in entries(service, now)]


def liveTaskNames(service, now=None):
    """The task names some live worker of ``service`` can run."""
    names = set()
    for entry in entries(service, now):
        names.update(entry.tasks)
    return names


def slots(service, key, now=None):
    """Where the processor registered under ``key`` stands among the live
    ones: ``(offset, total, oid)``, the number of worker threads of the
    live entries before it in key order, the number of all of them, and
    the oid of the registry's BTree (whose change means another processor
    came or went); None if it is not registered (yet).  Its threads are
    the claim slots ``offset`` to ``offset + concurrency - 1`` of ``total``
    (``structures.setHome``).  Loads every entry: call it when the
    registry changed, not per claim."""
    workers = _container(service)
    if workers is None or key not in workers:
        return None
    now = time.time() if now is None else now
    offset = total = 0
    for k, entry in workers.items():
        if k == key:
            offset = total
        elif not entry.alive(now):
            continue
        total += max(1, entry.concurrency)
    return offset, total, workers._p_oid


def first(service, key, now=None):
    """True if the processor registered under ``key`` is the live one of
    smallest key (or is not registered yet, or no registry exists): the
    one whose clock removes expired jobs (``remotetask.retention``), so
    that workers' expiry steps do not conflict among themselves.  Loads
    every entry: call it per maintenance, not per tick."""
    workers = _container(service)
    if workers is None or key not in workers:
        return True
    now = time.time() if now is None else now
    for k, entry in workers.items():
        if k == key:
            return True
        if entry.alive(now):
            return False
    return True


def prune(service, now=None):
    """Remove the entries expired at ``now``; return their worker ids.
    (Called by processors' maintenance.)"""
    workers = _container(service)
    if workers is None:
        return []
    now = time.time() if now is None else now
    dead = [(k, e.id) for k, e in workers.items() if not e.alive(now)]
    for key, ident in dead:
        del workers[key]
    return [ident for key, ident in dead]


def unserved(service, names=None, now=None):
    """``{task: number of waiting jobs}`` for the tasks with jobs waiting
    (queued or delayed) that no live worker of ``service`` runs and that
    are not in ``names`` either (pass the locally registered ones when this
    process runs jobs itself)."""
    from remotetask.interfaces import DELAYED, QUEUED
    served = liveTaskNames(service, now) | set(names or ())
    found = {}
    for task in service.taskNames():
        if task in served:
            continue
        n = sum(len(service.jobIds(status, task))
                for status in (QUEUED, DELAYED))
        if n:
            found[task] = n
    return found


def describeUnserved(found):
    """One warning line per task of ``unserved()``."""
    return ['%d job%s of %r waiting; no worker runs it' % (
        n, '' if n == 1 else 's', task) for task, n in sorted(found.items())]


class Registration:
    """A processor's entry: registered, kept beating and removed by the
    processor's clock thread (``tick``) and ``stop`` (``remove``)."""

    def __init__(self, processor, kind='thread', interval=INTERVAL):
        self.processor = processor
        self.kind = kind
        self.interval = float(interval)
        self.key = '%s %s' % (processor.worker_id, uuid.uuid4().hex[:12])
        self.lastBeat = 0.0
        self.nextBeat = 0.0
        self.nextPrune = 0.0

    def _entry(self, service, now):
        workers = _container(service, create=True)
        entry = workers.get(self.key)
        if entry is None:
            # First beat, or pruned after an outage: (re)register.
            p = self.processor
            entry = WorkerEntry(
                self.key, p.worker_id, socket.gethostname(), os.getpid(),
                self.kind, p.concurrency, p.taskNames(), self.interval, now)
            workers[self.key] = entry
        return entry

    def due(self, now, idle=False):
        """True if a heartbeat is due at ``now``; a busy processor
        (``idle`` false) beats at its own interval even after a longer
        idle one (``remotetask.quiet``)."""
        if idle:
            return now >= self.nextBeat
        return now >= min(self.nextBeat, self.lastBeat + self.interval)

    def pruneDue(self, now):
        """True once per ``MISSED`` intervals: reading every entry at each
        heartbeat would make N workers load N entries every few seconds."""
        if now < self.nextPrune:
            return False
        self.nextPrune = now + MISSED * self.interval
        return True

    def beat(self, service, now, interval=None):
        """Register or update the entry (in the caller's transaction);
        the next beat is due ``interval`` seconds later (default: the
        processor's), which the entry records: it expires ``MISSED`` of
        them after this beat."""
        interval = self.interval if interval is None else float(interval)
        entry = self._entry(service, now)
        if entry.interval != interval:
            entry.interval = interval
        stats = self.processor.stats
        tasks = tuple(sorted(self.processor.taskNames()))
        running = tuple(sorted(self.processor.runningJobs()))
        entry.heartbeat = now
        if entry.tasks != tasks:
            entry.tasks = tasks
        if entry.running != running:
            entry.running = running
        entry.done = stats['completed']
        entry.failed = stats['failed']
        self.lastBeat = now
        self.nextBeat = now + interval

    def remove(self, service):
        """Remove the entry (in the caller's transaction)."""
        workers = _container(service)
        if workers is not None and self.key in workers:
            del workers[self.key]

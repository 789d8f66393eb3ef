"""Retention: finished jobs are removed after a period per status.

``service.retention`` (a ``Retention``) maps the final statuses to seconds
(None: keep for ever).  The defaults follow Celery's result expiry: a day
for ``completed`` and ``cancelled`` jobs, a week for ``error`` ones (they
are the ones someone looks at).  A task's ``keep`` (seconds, or
``math.inf`` for ever) overrides the service's retention for its jobs,
in every final status.  A job's end is ``job.completed`` (its creation for
jobs stored by older versions that did not record a cancel's time).

``expire()`` removes expired jobs, oldest first, in bounded steps: the
processors' clock calls it in small transactions of its own (at most
``BATCH`` removals and ``SCAN`` ids looked at each) after its maintenance.
It walks the status indexes by id (creation order), never all jobs, and
stops a status at the first job created too recently to have expired
under the shortest period in force (a job ends after it is created).  A
caller keeps a cursor per status between calls, so the jobs a task keeps
for ever are looked at once per pass, not at every call.

Why the sentinel: removal takes the first ids of a status index while the
workers' completions append to it.  BTrees can not merge a change of a
bucket's first key (or the emptying of a bucket) with a concurrent change
of that bucket, so without the never-removed ``SENTINEL`` key (as in the
hot indexes, see docs/design.md) each expiry step would conflict with the
completions of its moment, and a worker's group of jobs would run again.
The partitioned status indexes (``structures.IdSet``) hold one in each
part, the final ones too.

A job that a job not final yet was added after (``workflows.awaited()``:
its result may still be read) is kept until that one is final.

``clean()`` removes the jobs of some statuses that ended before a time, in
the same bounded steps (``remotetask clean --older-than``).  Removed jobs
are counted per reason (``retention``, ``clean``, ``delete``) in
conflict-free ``Length`` counters: ``/metrics`` shows them.
"""
import collections.abc
import itertools
import math

import persistent
from BTrees.Length import Length

from remotetask import workflows
from remotetask.interfaces import (
    CANCELLED, COMPLETED, ERROR, FINAL_STATUSES, InvalidInputError,
    InvalidStatusError)
from remotetask.numbers import checkNumber, shortRepr
from remotetask.structures import SENTINEL

DAY = 86400.0

#: The retention of a service that was not told otherwise.
DEFAULTS = {COMPLETED: DAY, ERROR: 7 * DAY, CANCELLED: DAY}

#: Jobs removed per transaction, and ids looked at per transaction (the
#: defaults of ``expire()`` and ``clean()``'s steps; the clock adapts its
#: steps between ``MIN_BATCH`` and ``MAX_BATCH``, looking at
#: ``SCAN_FACTOR`` ids per removal at most).
BATCH = 200
SCAN = 2000
MIN_BATCH = 25
MAX_BATCH = 1000
SCAN_FACTOR = 10

REASONS = ('retention', 'clean', 'delete')


def checkSeconds(what, value, forever='None'):
    """``value`` as float seconds >= 0, or None; InvalidInputError naming
    ``what`` otherwise."""
    if value is None:
        return None
    try:
        return checkNumber(what, value, 0, infinite=forever != 'None')
    except InvalidInputError:
        raise InvalidInputError(
            '%s must be a number of seconds >= 0 or %s (keep for ever), '
            'not %s' % (what, forever, shortRepr(value))) from None


class RetentionState(persistent.Persistent):
    """What a service stores about retention, at ``service._retention``
    (made the first time something is set or removed)."""

    def __init__(self):
        self.policy = {}            # only the statuses set; replaced whole
        self.removed = {reason: Length() for reason in REASONS}


def state(service, create=False):
    current = getattr(service, '_retention', None)
    if current is None and create:
        current = service._retention = RetentionState()
    return current


class Retention(collections.abc.MutableMapping):
    """``service.retention``: see the module docstring.  Setting an item
    checks it (InvalidInputError) and stores it in the service's
    transaction; deleting one goes back to its default."""

    def __init__(self, service):
        self._service = service

    def _policy(self):
        current = state(self._service)
        return {} if current is None else current.policy

    def __getitem__(self, status):
        if status not in DEFAULTS:
            raise KeyError(status)
        return self._policy().get(status, DEFAULTS[status])

    def __setitem__(self, status, seconds):
        self.update({status: seconds})

    def __delitem__(self, status):
        if status not in DEFAULTS:
            raise KeyError(status)
        current = state(self._service, create=True)
        policy = dict(current.policy)
        policy.pop(status, None)
        current.policy = policy

    def __iter__(self):
        return iter(FINAL_STATUSES)

    def __len__(self):
        return len(FINAL_STATUSES)

    def update(self, other=(), **kw):
        """Check every value first, then store them all (or nothing)."""
        checked = self._check(dict(other, **kw))
        current = state(self._service, create=True)
        current.policy = dict(current.policy, **checked)

    def replace(self, policy):
        """Set the statuses in ``policy``; the others go back to their
        defaults (``service.retention = {...}``)."""
        if not isinstance(policy, collections.abc.Mapping):
            raise InvalidInputError('retention must be a mapping of '
                                    'statuses to seconds, not %r' % (policy,))
        checked = self._check(dict(policy))
        state(self._service, create=True).policy = checked

    def _check(self, changes):
        checked = {}
        for status, seconds in changes.items():
            if status not in DEFAULTS:
                raise InvalidInputError(
                    'retention is set for %s only, not %r' % (
                        ', '.join(FINAL_STATUSES), status))
            checked[status] = checkSeconds('the retention of %r jobs'
                                           % status, seconds)
        return checked

    def __repr__(self):
        return 'Retention(%r)' % dict(self)


def keepOf(task, service, status):
    """Seconds a job of ``task`` in the final ``status`` is kept (inf: for
    ever)."""
    keep = getattr(task, 'keep', None)
    if keep is None:
        keep = service.retention[status]
    return math.inf if keep is None else keep


def removedCounts(service):
    """``{reason: jobs removed}`` since the service was made."""
    current = state(service)
    if current is None:
        return dict.fromkeys(REASONS, 0)
    return {reason: current.removed[reason]() for reason in REASONS}


def forget(service, job, reason):
    """Remove ``job`` from ``service`` and count it under ``reason``."""
    service._forget(job)
    state(service, create=True).removed[reason].change(1)


#: Jobs whose records are asked for at once (``Connection.prefetch``):
#: over ZEO one round trip's wait for many loads instead of one per job.
PREFETCH = 100


def _walk(service, status, cursor, scan):
    """Up to ``scan`` (jobid, job) of ``status`` from after ``cursor``."""
    index = service._index[status]
    start = SENTINEL if cursor is None else cursor
    # A list first: removing from a BTree while iterating over it skips.
    ids = list(itertools.islice(index.keys(min=start, excludemin=True),
                                None if math.isinf(scan) else scan))
    jar = service._p_jar
    for first in range(0, len(ids), PREFETCH):
        chunk = [(jobid, service.jobs[jobid])
                 for jobid in ids[first:first + PREFETCH]]
        if jar is not None:
            jar.prefetch([job for jobid, job in chunk
                          if job._p_oid is not None])
        yield from chunk


def expire(service, now, cursors=None, limit=BATCH, scan=SCAN):
    """Remove up to ``limit`` expired jobs, oldest first (see the module
    docstring).  ``cursors`` (``{status: last id looked at}``) says where
    to go on from; returns ``(removed ids, new cursors, more)``, ``more``
    true when this step stopped at its limits rather than at the end of
    what may have expired.  Apply the new cursors only once the
    transaction committed."""
    cursors = dict(cursors or {})
    tasks = service.getAvailableTasks()
    removed = []
    more = False
    for status in FINAL_STATUSES:
        if not service.count(status):
            cursors[status] = None
            continue
        keeps = [keepOf(task, service, status) for task in tasks.values()]
        keeps.append(keepOf(None, service, status))
        shortest = min(keeps)
        if math.isinf(shortest):
            continue                    # nothing of this status expires
        cursor = cursors.get(status)
        looked = 0
        for jobid, job in _walk(service, status, cursor, scan):
            looked += 1
            if job.created + shortest > now:
                cursor = None           # the rest is younger: start over
                break
            cursor = jobid
            keep = keepOf(tasks.get(job.task), service, status)
            if (job.completed or job.created) + keep <= now \
                    and not workflows.awaited(service, job):
                forget(service, job, 'retention')
                removed.append(jobid)
                if len(removed) >= limit:
                    more = True
                    break
        else:
            if looked >= scan:
                more = True             # go on from the cursor
            else:
                cursor = None           # end of the index: start over
        cursors[status] = cursor
        if len(removed) >= limit:
            break
    return removed, cursors, more


def clean(service, statuses, before=None, limit=None, scan=None,
          cursors=None):
    """Remove the jobs of ``statuses`` (final) that ended before the epoch
    time ``before`` (all of them if None), counted as ``clean``.  With
    ``limit``/``scan`` one bounded step as in ``expire()``; returns
    ``(removed ids, new cursors, more)``."""
    for status in statuses:
        if status not in FINAL_STATUSES:
            raise InvalidStatusError(
                'can not clean jobs that are %r: only final statuses '
                '(%s) can be cleaned' % (status, ', '.join(FINAL_STATUSES)))
    cursors = dict(cursors or {})
    removed = []
    more = False
    scan = math.inf if scan is None else scan
    for status in statuses:
        if not service.count(status):
            continue
        cursor = cursors.get(status)
        looked = 0
        stop = False
        for jobid, job in _walk(service, status, cursor, scan):
            looked += 1
            if before is not None and job.created >= before:
                stop = True             # the rest ended later still
                break
            cursor = jobid
            if (before is None or (job.completed or job.created) < before) \
                    and not workflows.awaited(service, job):
                forget(service, job, 'clean')
                removed.append(jobid)
                if limit is not None and len(removed) >= limit:
                    more = True
                    break
        if not stop and not more and looked >= scan:
            more = True
        cursors[status] = cursor
        if more:
            break
    return removed, cursors, more

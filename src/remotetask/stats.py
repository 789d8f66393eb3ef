"""Statistics of the runs, kept in the database (design: docs/stats.md).

Per task and per minute (and per hour): how many runs completed, failed
(the job ended in error), were retried or were cancelled while running,
and a histogram of their run times; the number of waiting jobs seen at
the time; the last failure of each task.  Whichever process ran the jobs,
every reader sees the same numbers.

Two rings of slots, made once with the service: ``MINUTES`` slots of a
minute (the last hour) and ``HOURS`` slots of an hour (the last day).
The slot of a time is ``stamp % len(ring)``; a slot holding an older
stamp is emptied by the first writer of its new period, so nothing
older than the ring is kept, and the size never grows with the number
of jobs.  Totals since the statistics began (``Totals``: what the
Prometheus histograms of ``/metrics`` need) are kept beside them.

Every end of a run writes three small objects: its minute slot, its hour
slot and the totals.  Concurrent writes of them never conflict: each
class resolves a conflict by adding up both transactions' changes
(``resolveSlot``, ``resolveTotals``: pure functions of the old, committed
and new states), including two first writers of a new period, which both
empty the slot and add their run.

The service calls ``record()`` at the end of each run (``_settle``).
"""
import bisect
import time

import persistent
from ZODB.POSException import ConflictError

from remotetask.interfaces import (
    CANCELLED, COMPLETED, DELAYED, ERROR, QUEUED)

MINUTE = 60
HOUR = 3600
#: Slots of the minute ring: the last hour, the current minute and room.
MINUTES = 64
#: Slots of the hour ring: the last day, the current hour and room.
HOURS = 26
#: The outcomes of a run as ``_settle`` names them, and as counted here.
OUTCOMES = {COMPLETED: 'completed', ERROR: 'failed', 'retry': 'retried',
            CANCELLED: 'cancelled'}
#: The outcomes whose run time goes to the histogram.
TIMED = ('completed', 'failed', 'retried')
COUNTED = ('completed', 'failed', 'retried', 'cancelled')
#: Seconds between two samples of the waiting jobs (per minute slot).
SAMPLE = 10
#: The last failure of a task keeps this much of its error text.
ERROR_LIMIT = 300
#: Upper bounds (seconds) of the histogram's bins: 1 ms to a day, each
#: bin at most a third wider than the one before (a percentile read from
#: the histogram is within that of the true one).  The last bin holds
#: longer runs.  Prometheus' usual buckets are among them (``BUCKETS``).
_MANTISSAS = (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 7.5)
EDGES = tuple(sorted({round(m * 10.0 ** k, 6) for k in range(-3, 5)
                      for m in _MANTISSAS if m * 10.0 ** k <= 86400}
                     | {3600.0, 86400.0}))
#: The buckets of the Prometheus histograms of /metrics (each an edge).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
           60, 120, 300, 600, 1200, 3600)


def binOf(seconds):
    """The index of the bin of a run time: the first edge >= it
    (``len(EDGES)`` beyond the last)."""
    return bisect.bisect_left(EDGES, seconds)


# -- the persistent structures --------------------------------------------------

def _empty(stamp=None):
    return {'stamp': stamp, 'counts': {}, 'failures': {}, 'waiting': None}


def _addCounts(into, new, base):
    for key, value in new.items():
        delta = value - base.get(key, 0)
        if delta:
            into[key] = into.get(key, 0) + delta
    return into


def resolveSlot(old, committed, new):
    """The state of a slot both transactions wrote: their counts added up.

    Two writers of the same period: each one's change from ``old`` is
    added to ``committed``; when ``old`` held another period (both emptied
    the slot for a new one), each one's counts are all change.  Writers of
    different periods (one late by a whole ring) conflict: the late one
    runs again and finds its period gone.
    """
    stamp = new.get('stamp')
    if committed.get('stamp') != stamp:
        raise ConflictError('a statistics slot was taken for another period '
                            'by a concurrent transaction')
    base = old.get('counts', {}) if old.get('stamp') == stamp else {}
    result = dict(committed)
    result['counts'] = _addCounts(dict(committed.get('counts', {})),
                                  new.get('counts', {}), base)
    failures = dict(committed.get('failures', {}))
    for task, failure in new.get('failures', {}).items():
        if task not in failures or failure[0] > failures[task][0]:
            failures[task] = failure
    result['failures'] = failures
    waits = [w for w in (committed.get('waiting'), new.get('waiting')) if w]
    result['waiting'] = max(waits) if waits else None
    return result


def resolveTotals(old, committed, new):
    """The state of the totals both transactions wrote: counts added up
    (a task new to both is counted from zero by each)."""
    result = dict(committed)
    result['counts'] = _addCounts(dict(committed.get('counts', {})),
                                  new.get('counts', {}),
                                  old.get('counts', {}))
    return result


class Slot(persistent.Persistent):
    """The statistics of one period (a minute or an hour) of a ring.

    ``counts`` maps ``(task, name)`` to a number: ``name`` an outcome
    (``OUTCOMES``), ``'seconds'`` (the sum of the run times) or a bin
    number of the histogram.  ``failures`` maps a task to its last
    failure ``(end, jobid, error)``; ``waiting`` is ``(time, jobs
    waiting)`` as last seen by a writer.
    """

    def __init__(self):
        self.__dict__.update(_empty())

    def merge(self, stamp, counts, failures, waiting=None):
        """Add ``counts`` (as in ``counts``) and ``failures`` to the period
        ``stamp``, and note ``waiting`` (``(time, jobs)``) if given; False
        if the slot already holds a later period (too old for the ring)."""
        if self.stamp != stamp:
            if self.stamp is not None and stamp < self.stamp:
                return False
            self.__dict__.update(_empty(stamp))
        mine = self.counts
        for key, value in counts.items():
            mine[key] = mine.get(key, 0) + value
        for task, failure in failures.items():
            last = self.failures.get(task)
            if last is None or failure[0] >= last[0]:
                self.failures[task] = failure
        if waiting is not None:
            self.waiting = waiting
        self._p_changed = True
        return True

    def _p_resolveConflict(self, old, committed, new):
        return resolveSlot(old, committed, new)


class Totals(persistent.Persistent):
    """Counts since the statistics began, as in ``Slot.counts``."""

    def __init__(self, now=None):
        self.counts = {}
        self.since = time.time() if now is None else now

    def merge(self, counts):
        mine = self.counts
        for key, value in counts.items():
            mine[key] = mine.get(key, 0) + value
        self._p_changed = True

    def _p_resolveConflict(self, old, committed, new):
        return resolveTotals(old, committed, new)


def _count(counts, task, outcome, seconds):
    key = (task, outcome)
    counts[key] = counts.get(key, 0) + 1
    if seconds is not None and outcome in TIMED:
        key = (task, binOf(seconds))
        counts[key] = counts.get(key, 0) + 1
        key = (task, 'seconds')
        counts[key] = counts.get(key, 0) + seconds


class Statistics(persistent.Persistent):
    """The rings and the totals of a service; written only when made."""

    def __init__(self, now=None):
        self.minutes = tuple(Slot() for _ in range(MINUTES))
        self.hours = tuple(Slot() for _ in range(HOURS))
        self.totals = Totals(now)


def state(service, create=False):
    """The ``Statistics`` of a service (made for a service older than
    them, if ``create``; else None)."""
    found = getattr(service, '_stats', None)
    if found is None and create:
        found = service._stats = Statistics()
    return found


def written(service, end):
    """The objects that counting runs ending at ``end`` writes (the
    minute's and the hour's slots, the totals): what a run loads ahead
    while its task runs (``TaskService.run``), since every other worker's
    commit of its runs changed them.  Empty before the statistics exist."""
    found = state(service)
    if found is None:
        return ()
    return (found.minutes[int(end // MINUTE) % len(found.minutes)],
            found.hours[int(end // HOUR) % len(found.hours)],
            found.totals)


# -- the hook ---------------------------------------------------------------------

def record(service, job, outcome, end, error=None):
    """Count the end of a run of ``job`` (called by the service when a run
    ends, in the transaction that ends it).

    Counted when that transaction commits (a before-commit hook), once
    for all the runs it ended: a processor that runs several jobs in one
    transaction takes a savepoint per job, which would otherwise write the
    statistics again each time.  A run whose end was rolled back to a
    savepoint meanwhile is not counted (its attempt is gone from the job).
    """
    name = OUTCOMES.get(outcome)
    if name is None:            # handed back: the run did not end
        return
    start = job.started
    seconds = None
    if name in TIMED and start is not None:
        seconds = max(0.0, end - start)
    entry = (job, name, seconds, end, error)
    jar = getattr(service, '_p_jar', None)
    if jar is None:             # not stored (yet): counted now
        _count_runs(service, [entry], check=False)
        return
    txn = jar.transaction_manager.get()
    try:
        pending = txn.data(service)
    except KeyError:
        pending = []
        txn.set_data(service, pending)
        txn.addBeforeCommitHook(_count_runs, (service, pending))
    pending.append(entry)


def _ended(job, end, name):
    """Whether the job's attempts still show the run that ended at ``end``
    (it may have been rolled back to a savepoint)."""
    for attempt in reversed(job.attempts[-8:]):
        if attempt.get('end') == end and OUTCOMES.get(
                attempt.get('outcome')) == name:
            return True
    return False


def _count_runs(service, entries, check=True):
    """Count the runs of a transaction: summed by minute first, so that
    each slot is changed once per transaction, whatever its runs."""
    stats = state(service, create=True)
    minutes = {}
    for job, name, seconds, end, error in entries:
        if check and not _ended(job, end, name):
            continue
        counts, failures, last = minutes.setdefault(
            int(end // MINUTE), ({}, {}, [end]))
        _count(counts, job.task, name, seconds)
        if name == 'failed':
            failures[job.task] = (end, job.id, (error or '')[:ERROR_LIMIT])
        last[0] = max(last[0], end)
    if not minutes:
        return
    hours, totals = {}, {}
    for stamp, (counts, failures, [end]) in sorted(minutes.items()):
        slot = stats.minutes[stamp % len(stats.minutes)]
        # The waiting jobs, at most once per SAMPLE seconds per minute
        # (counting them reads every lane's tally).
        seen = slot.waiting if slot.stamp == stamp else None
        waiting = None
        if seen is None or not 0 <= end - seen[0] < SAMPLE:
            found = service.counts()
            waiting = (end, found[QUEUED] + found[DELAYED])
        slot.merge(stamp, counts, failures, waiting)
        hour = hours.setdefault(int(end // HOUR), [{}, {}, None])
        _add(hour[0], counts)
        hour[1].update(failures)
        hour[2] = waiting or hour[2]
        _add(totals, counts)
    for stamp, (counts, failures, waiting) in hours.items():
        stats.hours[stamp % len(stats.hours)].merge(stamp, counts, failures,
                                                    waiting)
    stats.totals.merge(totals)


def _add(into, counts):
    for key, value in counts.items():
        into[key] = into.get(key, 0) + value


# -- reading ----------------------------------------------------------------------

def _periods(ring, size, count, now):
    """The slots of the last ``count`` periods up to ``now``'s, oldest
    first: ``[(start time, slot or None)]``."""
    last = int(now // size)
    found = []
    for stamp in range(last - count + 1, last + 1):
        slot = ring[stamp % len(ring)]
        found.append((stamp * size, slot if slot.stamp == stamp else None))
    return found


def percentile(bins, q):
    """The ``q`` quantile (0..1) of a histogram ``{bin: count}``,
    interpolated within its bin; None if it is empty."""
    total = sum(bins.values())
    if not total:
        return None
    rank = q * total
    seen = 0
    for index in sorted(bins):
        n = bins[index]
        if seen + n >= rank:
            low = EDGES[index - 1] if index > 0 else 0.0
            if index >= len(EDGES):
                return EDGES[-1]
            high = EDGES[index]
            return low + (high - low) * ((rank - seen) / n if n else 0)
        seen += n
    return EDGES[-1]


def _byTask(counts):
    tasks = {}
    for (task, name), value in counts.items():
        entry = tasks.setdefault(task, {'bins': {}})
        if isinstance(name, int):
            entry['bins'][name] = entry['bins'].get(name, 0) + value
        else:
            entry[name] = entry.get(name, 0) + value
    return tasks


def _merge(slots):
    counts, failures = {}, {}
    for slot in slots:
        if slot is None:
            continue
        for key, value in slot.counts.items():
            counts[key] = counts.get(key, 0) + value
        for task, failure in slot.failures.items():
            if task not in failures or failure[0] > failures[task][0]:
                failures[task] = failure
    return counts, failures


def _row(task, entry, failure=None):
    completed = entry.get('completed', 0)
    failed = entry.get('failed', 0)
    retried = entry.get('retried', 0)
    bins = entry.get('bins', {})
    timed = sum(bins.values())
    return {
        'task': task, 'runs': completed + failed + retried,
        'completed': completed, 'failed': failed, 'retried': retried,
        'cancelled': entry.get('cancelled', 0),
        'failure_rate': (failed / (completed + failed)
                         if completed + failed else None),
        'mean': entry.get('seconds', 0) / timed if timed else None,
        'p50': percentile(bins, 0.5), 'p95': percentile(bins, 0.95),
        'last_failure': None if failure is None else {
            'at': failure[0], 'job': failure[1], 'error': failure[2]},
    }


def series(service, size, count, now=None):
    """Per period, oldest first, the last ``count`` periods of ``size``
    seconds (``MINUTE`` or ``HOUR``): start times, completed, failed,
    retried, waiting (None where no run ended) and per task p50/p95."""
    now = time.time() if now is None else now
    stats = state(service)
    ring = None if stats is None else (
        stats.minutes if size == MINUTE else stats.hours)
    if ring is None:
        periods = [(stamp * size, None) for stamp in
                   range(int(now // size) - count + 1, int(now // size) + 1)]
    else:
        periods = _periods(ring, size, count, now)
    out = {'step': size, 'time': [], 'completed': [], 'failed': [],
           'retried': [], 'waiting': [], 'runtime': {}}
    perTask = []
    for start, slot in periods:
        out['time'].append(start)
        tasks = _byTask(slot.counts) if slot is not None else {}
        perTask.append(tasks)
        for name in ('completed', 'failed', 'retried'):
            out[name].append(sum(t.get(name, 0) for t in tasks.values()))
        out['waiting'].append(
            slot.waiting[1] if slot is not None and slot.waiting else None)
    names = sorted({task for tasks in perTask for task in tasks})
    for task in names:
        p50, p95 = [], []
        for tasks in perTask:
            bins = tasks.get(task, {}).get('bins', {})
            p50.append(percentile(bins, 0.5))
            p95.append(percentile(bins, 0.95))
        out['runtime'][task] = {'p50': p50, 'p95': p95}
    return out


def waitingByTask(service, tasks):
    """Jobs waiting (queued or delayed) per task: an intersection of the
    status and task indexes each (in C; no job is loaded)."""
    return {task: sum(len(service.jobIds(status, task))
                      for status in (QUEUED, DELAYED)) for task in tasks}


def summary(service, now=None):
    """What ``GET /api/stats`` answers (see the OpenAPI document)."""
    now = time.time() if now is None else now
    stats = state(service)
    hours = [] if stats is None else [
        slot for start, slot in _periods(stats.hours, HOUR, 24, now)]
    counts, failures = _merge(hours)
    byTask = _byTask(counts)
    names = sorted(set(byTask) | set(service.taskNames()))
    waiting = waitingByTask(service, names)
    rows = []
    for task in names:
        row = _row(task, byTask.get(task, {}), failures.get(task))
        row['waiting'] = waiting.get(task, 0)
        rows.append(row)
    return {
        'now': now, 'window': 24 * HOUR,
        'since': None if stats is None else stats.totals.since,
        'tasks': rows,
        'waiting': service.count(QUEUED) + service.count(DELAYED),
        'minutes': series(service, MINUTE, 60, now),
        'hours': series(service, HOUR, 24, now),
    }


def cumulative(bins, buckets=BUCKETS):
    """``[(upper bound, runs <= it)]`` for ``buckets`` (edges of the
    histogram) and +Inf, from a histogram ``{bin: count}``."""
    out = []
    for bound in buckets:
        last = EDGES.index(float(bound))
        out.append((bound, sum(n for i, n in bins.items() if i <= last)))
    out.append((float('inf'), sum(bins.values())))
    return out


def totals(service):
    """Per task since the statistics began: ``{task: {'completed': n, ...,
    'seconds': sum, 'bins': {bin: n}}}`` (for /metrics)."""
    stats = state(service)
    if stats is None:
        return {}
    return _byTask(stats.totals.counts)

"""Bringing a service stored by an older version to the current layout.

Before issue 18 a service kept one ``LOBTree`` of jobs, one id set per
status and per task (a task's keyed by its name), a ``Length`` per status,
and queues (``JobQueue``) whose 16 partitions held ``id % 16``.  Since then
each of these is split by the producers' lanes (``remotetask.structures``).
``upgrade(service)`` rebuilds them from the jobs, in the current
transaction; the jobs themselves, their ids and everything else are kept.
``remotetask.root.findService`` calls it (through
``TaskService.upgradeLayout``) when it meets a service of the old layout,
so the first transaction that uses such a service upgrades it (a
concurrent one conflicts and is retried, and then finds it upgraded).
"""
import logging

from BTrees.OOBTree import OOBTree

from remotetask import routing
from remotetask.interfaces import STATUSES
from remotetask.structures import SENTINEL, Counts, JobTree, partitionOf

log = logging.getLogger('remotetask')


def isCurrent(service):
    return isinstance(service.jobs, JobTree)


def upgrade(service):
    """Rebuild ``service``'s jobs tree, indexes, counters and queues in the
    lanes' layout; return the number of jobs (0 if it was current)."""
    if isCurrent(service):
        return 0
    from remotetask.service import WaitingIndex, _statusIndex
    old = service.jobs
    jobs = JobTree()
    index = {status: _statusIndex(status) for status in STATUSES}
    counts = Counts()
    byTask = OOBTree()
    n = 0
    for jobid, job in old.items():
        jobs[jobid] = job
        index.setdefault(job._status, _statusIndex(job._status)).insert(jobid)
        counts.change(jobid, job._status, 1)
        key = (job.task, partitionOf(jobid))
        ids = byTask.get(key)
        if ids is None:
            ids = byTask[key] = WaitingIndex([SENTINEL])
        ids.insert(jobid)
        n += 1
    service.jobs = jobs
    service._index = index
    service._counts = counts
    service._byTask = byTask
    for key, lane in routing.lanes(service):
        lane.relayout()
    service._p_changed = True
    log.warning('task service %r: upgraded to the lanes layout (%d jobs)',
                service.__name__, n)
    return n

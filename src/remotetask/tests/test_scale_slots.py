"""Claim slots: each worker thread of a service claims from queue
partitions of its own first (``structures.setHome``, numbered from the
worker registry by ``registry.slots``), and short CPU-bound jobs are
claimed by one thread of a processor at a time (``Processor._mayClaim``).
See docs/design.md, "Claim slots"."""
import time

import pytest

from remotetask import registry, structures
from remotetask.structures import JobQueue, owner
from remotetask.tests.test_processor import env, task  # noqa: F401


def test_slot_owns_every_totalth_partition():
    assert [p for p in range(16) if owner(p, (1, 4), 16)] == [1, 5, 9, 13]
    assert [p for p in range(16) if owner(p, (0, 1), 16)] == list(range(16))
    # More slots than partitions: slot s shares partition s % n.
    assert [p for p in range(4) if owner(p, (6, 8), 4)] == [2]
    for total in (1, 3, 4, 7, 64, 100):
        for p in range(64):
            assert sum(owner(p, (s, total), 64) for s in range(total)) >= 1


def test_a_slot_takes_its_own_entries_in_due_order_then_the_others():
    queue = JobQueue()
    # One producer's lane: ids 1..40 spread over the lane's 4 partitions.
    for jobid in range(1, 41):
        queue.put(jobid, float(jobid))
    parts = {queue.partitionOf(j) for j in range(1, 41)}
    assert len(parts) == 4
    mine = queue.partitionOf(1)
    home = (mine, 4)
    due = queue.due(100.0, 5, mine, home)
    assert due == [(float(j), j) for j in (1, 5, 9, 13, 17)]
    # Only entries due at ``now``: its own first, then the others'.
    due = queue.due(6.0, 5, mine, home)
    assert due[:2] == [(1.0, 1), (5.0, 5)]
    assert len(set(due[2:])) == 3
    assert all(eta <= 6.0 and queue.partitionOf(j) != mine
               for eta, j in due[2:])
    # Its own partition emptied: it takes from the others'.
    for jobid in range(1, 41, 4):
        assert queue.remove(jobid, float(jobid))
    stolen = queue.due(100.0, 3, mine, home)
    assert len(stolen) == 3
    assert all(queue.partitionOf(j) != mine for eta, j in stolen)
    # Without a slot: as before, from ``start`` round the partitions.
    assert len(queue.due(100.0, 30, 0)) == 30


def test_claim_partition_starts_in_the_threads_own_partitions():
    structures.setHome((3, 4))
    try:
        structures.movePartition()
        for _ in range(20):
            part = structures.claimPartition(64)
            assert part % 4 == 3
            structures.movePartition()
        structures.keepPartition(5)       # not its own: back home
        assert structures.claimPartition(64) % 4 == 3
    finally:
        structures.setHome(None)
        structures.movePartition()


def test_registry_numbers_the_threads_of_the_live_processors(env):
    task('echo', lambda x: x)
    a = env.processor(heartbeat=0.2, concurrency=2)
    b = env.processor(heartbeat=0.2, concurrency=1)
    env.wait(lambda: len(env.service.workers()) == 2)
    env.tm.begin()
    found = {p: registry.slots(env.service, p.registration.key)
             for p in (a, b)}
    assert {f[1] for f in found.values()} == {3}
    assert sorted(f[0] for f in found.values()) in ([0, 2], [0, 1])
    offsets = sorted((found[p][0], p.concurrency) for p in (a, b))
    # The slots of one processor's threads follow each other, no overlap.
    assert offsets[0][0] + offsets[0][1] == offsets[1][0]
    # The processors' claims use them: thread 1 has the first slot (a
    # reading of a's made before b registered is read again: b's
    # registration invalidated the registry's BTree).
    for p in (a, b):
        p._local.index = 1
        env.wait(lambda: p._home(env.service) == (found[p][0], 3),
                 timeout=5, what='the slots of %r' % p)
    assert registry.slots(env.service, 'not registered') is None
    b.stop()
    env.tm.begin()
    assert registry.slots(env.service, a.registration.key)[:2] == (0, 2)
    # An invalidation of the registry's BTree makes the next claim re-read.
    a._slotsDue = time.monotonic() + 100
    a._onInvalidate({a._slots[2]})
    assert a._slotsDue == 0.0
    assert a._home(env.service) == (0, 2)


def test_one_thread_claims_short_cpu_bound_jobs(env):
    from remotetask.processor import Processor
    p = Processor(env.db, concurrency=3)    # not started: no thread races
    # Nothing measured yet: one thread claims (and its run measures).
    assert p._mayClaim(1) and not p._mayClaim(2) and not p._mayClaim(3)
    p._leave(1)
    for _ in range(20):
        p._measured(0.001, 'noop', 0.001)          # short, CPU-bound
    assert p._cpuShare > 0.9
    assert p._mayClaim(2)                         # the first to ask runs
    assert not p._mayClaim(1) and not p._mayClaim(3)
    assert p._mayClaim(2)
    # The runner claims for the whole processor: its share of the slots.
    p._local.index = 2
    p._slots, p._slotsDue = (3, 6, None), time.monotonic() + 100
    assert p._home(None) == (1, 2)
    p._local.index = 1
    assert p._home(None) == (3, 6)                # not the runner: its own
    p._leave(2)                                   # it found nothing
    assert p._mayClaim(3) and not p._mayClaim(2)
    for _ in range(20):
        p._measured(0.01, 'sleep', 0.0001)        # waiting jobs: all claim
    assert all(p._mayClaim(i) for i in (1, 2, 3))
    for _ in range(20):
        p._measured(0.5, 'long', 0.5)             # long jobs: all claim
    assert all(p._mayClaim(i) for i in (1, 2, 3))
    assert Processor(env.db, concurrency=1)._mayClaim(1)


def test_a_runner_stuck_in_a_long_job_lets_the_others_claim(env):
    import threading
    release = threading.Event()
    task('quick', lambda x: x)
    task('stuck', lambda x: release.wait(30))
    p = env.processor(concurrency=3)
    try:
        for _ in range(20):
            p._measured(0.001, 'quick', 0.001)   # short, CPU-bound
        env.add('stuck', 0)
        env.wait(lambda: p.stats['running'] == 1, what='the long job')
        for i in range(5):
            env.add('quick', i)
        # The thread running the long job was the runner; another one
        # takes the role and runs the short jobs meanwhile.
        env.wait(lambda: p.stats['completed'] == 5, timeout=20,
                 what='the short jobs, while the long one runs')
    finally:
        release.set()
    env.wait(lambda: p.stats['completed'] == 6)


def test_sleeping_jobs_are_measured_as_waiting(env):
    task('nap', lambda x: time.sleep(0.02))
    p = env.processor(concurrency=2)
    for i in range(10):
        env.add('nap', i)
    env.wait(lambda: p.stats['completed'] == 10)
    assert p._cpuShare < 0.5
    assert p._mayClaim(1) and p._mayClaim(2)


@pytest.mark.parametrize('concurrency', [1, 4])
def test_threads_drain_every_job_once(env, concurrency):
    seen = []
    task('note', seen.append)
    p = env.processor(concurrency=concurrency)
    for first in range(0, 300, 100):
        for attempt in env.tm.attempts(10):
            with attempt:
                for i in range(first, first + 100):
                    env.root['tasks'].add('note', i)
    env.wait(lambda: p.stats['completed'] == 300)
    time.sleep(0.2)
    assert set(seen) == set(range(300))   # (a conflict may run one again)
    assert p.stats['completed'] == 300


def test_claimed_indexes_split_like_the_queue():
    from BTrees.LOBTree import LOTreeSet
    from remotetask.interfaces import PROCESSING, QUEUED
    from remotetask.service import TaskService
    from remotetask.structures import IdSet, IdSetView, intersect
    service = TaskService()
    queue = JobQueue()
    for status in (QUEUED, PROCESSING, 'completed'):
        index = service._index[status]
        assert len(index.partitions) == len(queue._parts)
        for jobid in (1, 2, 3, 4, 1001, 5003, 15999, 16000, 123457):
            assert index._partFor(jobid) is index.partitions[
                queue.partitionOf(jobid)]
    assert len(service._index['error'].partitions) == 16
    # Intersections with the task index (one set per lane) still work.
    ids = IdSet(partitions=64)
    wanted = [1, 2, 3, 7, 1001, 1002, 2500, 40001, 40002]
    for jobid in wanted:
        ids.insert(jobid)
    lanes = IdSetView([LOTreeSet([0]) for _ in range(16)])
    for jobid in (2, 3, 1002, 1003, 40002, 99):
        lanes._partFor(jobid).insert(jobid)
    assert list(intersect(ids, lanes)) == [2, 3, 1002, 40002]
    assert list(intersect(lanes, ids)) == [2, 3, 1002, 40002]
    assert list(ids) == wanted
    assert structures.misplaced(ids) == []


def test_a_slots_claims_change_its_own_index_partitions(env):
    from remotetask.interfaces import PROCESSING, QUEUED
    task('echo', lambda x: x)
    for attempt in env.tm.attempts(5):
        with attempt:
            for i in range(40):
                env.root['tasks'].add('echo', i)
    service = env.root['tasks']
    mine = service._queue.partitionOf(next(iter(service.jobIds(QUEUED))))
    structures.setHome((mine % 4, 4))
    try:
        structures.movePartition()
        with env.tm:
            claimed = service.claim(limit=5, worker='w', spread=True)
    finally:
        structures.setHome(None)
        structures.movePartition()
    assert len(claimed) == 5
    parts = {service._queue.partitionOf(job.id) for job in claimed}
    assert len(parts) == 1 and parts.pop() % 4 == mine % 4
    processing = service._index[PROCESSING]
    for job in claimed:
        assert job.id in processing._partFor(job.id)
        assert job.id not in service._index[QUEUED]
    assert service.count(QUEUED) == 35


def _lane(queue, n):
    for jobid in range(1, n + 1):
        queue.put(jobid, float(jobid))


def test_a_slot_whose_partitions_are_dry_takes_from_the_end_of_anothers():
    queue = JobQueue()
    _lane(queue, 800)          # 200 entries in each of the lane's 4
    mine = queue.partitionOf(1)
    other = queue.partitionOf(2)
    part = queue._parts[other]
    heads = {bucket.minKey() for bucket in _buckets(part)}
    # While it has entries of its own, a slot takes only those.
    taken = queue.due(1000.0, 40, other, (mine, 4))
    assert all(queue.partitionOf(j) == mine for eta, j in taken)
    # A dry slot: remove its own entries.
    for eta, jobid in list(queue._entries(queue._parts[mine])):
        queue.remove(jobid, eta)
    taken = queue.due(1000.0, 40, other, (mine, 4))
    assert len(taken) == 40 and len(set(taken)) == 40
    assert all(queue.partitionOf(j) == other for eta, j in taken)
    # From the end of the partition, never a bucket's first key, and
    # nothing from its first STEAL_CLEAR buckets (where the owner takes).
    entries = list(queue._entries(part))
    assert not set(taken) & heads
    firsts = [b.minKey() for b in _buckets(part)]
    clear = firsts[structures.STEAL_CLEAR]
    assert all(key >= clear for key in taken)
    # Starting at one of the last STEAL_SPREAD buckets (a steal of 40
    # spans 3 of 14 usable entries).
    near = firsts[len(firsts) - structures.STEAL_SPREAD - 3]
    assert all(key >= near for key in taken)
    # Only due entries: the end of what is due at ``now``.
    taken = queue.due(400.0, 10, other, (mine, 4))
    assert len(taken) == 10
    assert all(key >= clear and key[0] <= 400.0 for key in taken)


def test_a_short_partition_is_taken_from_near_its_beginning():
    queue = JobQueue()
    _lane(queue, 40)           # 10 entries per partition: one bucket
    mine = queue.partitionOf(1)
    for eta, jobid in list(queue._entries(queue._parts[mine])):
        queue.remove(jobid, eta)
    other = queue.partitionOf(2)
    assert structures.stolen(queue._parts[other], (100.0, 0), 5) is None
    taken = queue.due(100.0, 30, other, (mine, 4))
    assert len(taken) == 30


def test_an_owners_claim_and_a_steal_commit_together(tmp_path):
    """The owner takes a partition's first entries while another slot
    takes from its end, at the same time: both commit (FileStorage
    resolves the buckets' changes, or rather, there is nothing to
    resolve: they changed different buckets)."""
    import transaction
    import ZODB
    from ZODB.FileStorage import FileStorage
    db = ZODB.DB(FileStorage(str(tmp_path / 'q.fs')))
    try:
        tm1, tm2 = transaction.TransactionManager(), \
            transaction.TransactionManager()
        c1, c2 = db.open(tm1), db.open(tm2)
        with tm1:
            c1.root()['q'] = queue = JobQueue()
            _lane(queue, 800)
        other = queue.partitionOf(2)
        mine = queue.partitionOf(1)
        with tm1:
            for eta, jobid in list(queue._entries(queue._parts[mine])):
                queue.remove(jobid, eta)
        tm1.begin()
        tm2.begin()
        q1, q2 = c1.root()['q'], c2.root()['q']
        for eta, jobid in q1.due(1000.0, 50, other, (other, 4)):
            q1.remove(jobid, eta)
        stolen = q2.due(1000.0, 50, other, (mine, 4))
        assert len(stolen) == 50
        for eta, jobid in stolen:
            q2.remove(jobid, eta)
        tm1.commit()
        tm2.commit()        # no ConflictError
        tm1.begin()
        assert len(list(q1._entries(q1._parts[other]))) == 100
        c1.close()
        c2.close()
    finally:
        db.close()


def _buckets(tree):
    """The buckets of a two-level OOTreeSet, in order."""
    state = structures._children(tree)
    return list(state[0][::2])


def test_a_processor_is_registered_before_its_first_claim(env, monkeypatch):
    """Its claims know their slot from the first one: start() registers
    it (the clock's heartbeats take over; here the clock does nothing)."""
    from remotetask.processor import Processor
    task('echo', lambda x: x)
    monkeypatch.setattr(Processor, '_clockLoop', lambda self: None)
    seen = []
    home = Processor._home

    def recording(self, service, version=None):
        found = home(self, service, version)
        seen.append(found)
        return found
    monkeypatch.setattr(Processor, '_home', recording)
    for attempt in env.tm.attempts(5):
        with attempt:
            env.root['tasks'].add('echo', 1)
    p = env.processor(concurrency=1)
    env.wait(lambda: env.service.count('completed') == 1)
    assert seen and seen[0] == (0, 1)
    env.tm.begin()
    assert registry.slots(env.service, p.registration.key)[:2] == (0, 1)


def test_jobs_of_a_group_that_ran_do_not_make_their_thread_busy(env):
    """A group's jobs stay RUNNING until the group commits; the ones whose
    task returned do not make the thread "stuck in a long job": the runner
    keeps its role (another thread would share the interpreter with it)
    and its claimed-ahead jobs are not handed back."""
    from remotetask.processor import CLAIMED, RUNNING, Processor, _Active
    p = Processor(env.db, concurrency=2)
    owner = '%s/1' % p.worker_id
    now = time.monotonic()

    def item(jobid, state, begun=None, ended=None):
        found = _Active(jobid, 1, 'quick', None, time.time(), owner)
        found.state, found.begun, found.ended = state, begun, ended
        p._active[jobid] = found
        return found
    item(1, RUNNING, now - 2.0, now - 1.99)     # ran 2 s ago
    current = item(2, RUNNING, now)             # its task runs now
    ahead = item(3, CLAIMED)
    p._runner = 1
    with p._lock:
        assert not p._runnerStuck()
    assert p._releaseHeld() == [] and ahead.state == CLAIMED
    current.begun = now - 0.5                   # a long task
    with p._lock:
        assert p._runnerStuck()


@pytest.mark.parametrize('release', ['waiting jobs', 'stop'])
def test_threads_at_the_gate_are_let_through_at_once(env, monkeypatch,
                                                      release):
    """Threads that may not claim (another runs short CPU-bound jobs) wait
    on the processor's gate, not in a loop of short sleeps; jobs measured
    as waiting (every thread claims them) or a stop release them at once,
    not after ``GATE_WAIT``."""
    import threading
    from remotetask import processor as processormod
    from remotetask.processor import Processor
    monkeypatch.setattr(processormod, 'GATE_WAIT', 60.0)
    p = Processor(env.db, concurrency=3)
    for _ in range(3):
        p._measured(0.001, 'quick', 0.001)      # short and CPU-bound
    assert p._mayClaim(1) and not p._mayClaim(2)    # 1 is the runner
    done = threading.Event()
    waiter = threading.Thread(target=lambda: (p._waitGate(2), done.set()))
    waiter.start()
    try:
        assert not done.wait(0.2)           # it waits
        if release == 'waiting jobs':
            for _ in range(10):
                p._measured(0.05, 'nap', 0.0)
            assert p._mayClaim(2)
        else:
            p._stopping.set()
            with p._gate:
                p._gate.notify_all()
        assert done.wait(10)
    finally:
        p._stopping.set()
        with p._gate:
            p._gate.notify_all()
        waiter.join(10)

"""Job lists stay cheap with 100,000 jobs: a page loads a bounded number of
objects from the storage, whatever the page, order or status filter."""
import threading

import pytest
import transaction
import ZODB
import zope.component
from ZODB.MappingStorage import MappingStorage

from remotetask import structures
from remotetask.db import getService
from remotetask.structures import partitionOf
from remotetask.task import SimpleTask
from remotetask.tests.webhelpers import webApp

JOBS = 100000
PAGE = 50
#: Objects a page may load besides its jobs: the root, the service, its
#: index or jobs tree, the BTree nodes and buckets on the path, progress
#: objects.  A scan of all jobs would load more than 100,000.  (The queued,
#: processing and completed indexes have SPREAD partitions per lane, but
#: only the lanes used have any: structures.IdSet makes them lazily.)
OVERHEAD = 120


class CountingStorage(MappingStorage):
    """A MappingStorage counting the object loads (cache misses)."""

    loads = 0

    def load(self, oid, version=''):
        self.loads += 1
        return super().load(oid, version)

    def loadBefore(self, oid, tid):
        self.loads += 1
        return super().loadBefore(oid, tid)


#: Producer threads adding the jobs at the same time: each has a lane of
#: its own, so the jobs, indexes and queue entries are spread over LANES
#: partitions that every page merges.
LANES = 4


@pytest.fixture(scope='module')
def big():
    for name in ('echo', 'other'):
        zope.component.provideUtility(SimpleTask(lambda input: input),
                                      name=name)
    storage = CountingStorage()
    db = ZODB.DB(storage, cache_size=200000)
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    getService(conn, create=True)
    tm.commit()
    # Job number i (its input) is of task 'other' if i % 100 == 0, delayed
    # if i % 10 == 0; lane n adds the jobs i with i % LANES == n.  The
    # threads take turns to commit (MappingStorage resolves no conflicts).
    turn = threading.Lock()
    barrier = threading.Barrier(LANES)

    def add(lane):
        ltm = transaction.TransactionManager()
        lconn = db.open(ltm)
        barrier.wait()
        numbers = range(lane, JOBS, LANES)
        for first in range(0, len(numbers), 5000):
            with turn, ltm:
                service = getService(lconn)
                for i in numbers[first:first + 5000]:
                    service.add('other' if i % 100 == 0 else 'echo', i,
                                now=1000.0 + i,
                                delay=3600 if i % 10 == 0 else None)
        barrier.wait()
        lconn.close()
    threads = [threading.Thread(target=add, args=(n,)) for n in range(LANES)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tm.begin()
    service = getService(conn)
    ids = list(service.jobs.keys())
    number = {jobid: service.jobs[jobid].input for jobid in ids}
    queued = list(service.jobIds('queued'))
    lanes = {partitionOf(jobid) for jobid in ids}
    tm.abort()
    conn.close()
    assert len(lanes) == LANES
    yield db, storage, ids, queued, number
    db.close()


def loadsFor(app, db, storage, url):
    db.cacheMinimize()
    before = storage.loads
    page = app.get(url).json
    return storage.loads - before, page


@pytest.mark.slow
def test_pages_load_a_bounded_number_of_objects(big):
    db, storage, ids, queued, number = big
    for name in ('echo', 'other'):
        zope.component.provideUtility(SimpleTask(lambda input: input),
                                      name=name)
    app = webApp(db)
    others = [jobid for jobid in ids if number[jobid] % 100 == 0]
    echoes = [jobid for jobid in ids if number[jobid] % 100 != 0]
    delayed = [jobid for jobid in ids if number[jobid] % 10 == 0]
    delayedSet = set(delayed)
    assert len(ids) == JOBS
    cases = [
        ('/api/jobs?limit=%d' % PAGE, ids[::-1][:PAGE]),
        ('/api/jobs?limit=%d&sort=id' % PAGE, ids[:PAGE]),
        ('/api/jobs?limit=%d&cursor=%d' % (PAGE, ids[60000]),
         ids[:60000][::-1][:PAGE]),
        ('/api/jobs?limit=%d&sort=id&cursor=%d' % (PAGE, ids[70000]),
         ids[70001:70001 + PAGE]),
        ('/api/jobs?limit=%d&status=queued&cursor=%d' % (PAGE, queued[50000]),
         queued[:50000][::-1][:PAGE]),
        ('/api/jobs?limit=%d&status=delayed&sort=id' % PAGE,
         delayed[:PAGE]),
        ('/api/jobs?limit=%d&task=other&cursor=%d' % (PAGE, ids[80000]),
         [i for i in others if i < ids[80000]][::-1][:PAGE]),
        ('/api/jobs?limit=%d&task=echo&status=queued&sort=id&cursor=%d'
         % (PAGE, ids[30000]), [i for i in queued if i > ids[30000]][:PAGE]),
        ('/api/jobs?limit=%d&task=other&status=delayed' % PAGE,
         others[::-1][:PAGE]),
        # sorted by status (index after index) or by task, from a cursor
        ('/api/jobs?limit=%d&sort=status' % PAGE, queued[:PAGE]),
        ('/api/jobs?limit=%d&sort=-status&cursor=delayed:%d'
         % (PAGE, delayed[5000]), delayed[:5000][::-1][:PAGE]),
        ('/api/jobs?limit=%d&sort=status&cursor=queued:%d'
         % (PAGE, queued[-10]), queued[-9:] + delayed[:PAGE - 9]),
        ('/api/jobs?limit=%d&sort=-task' % PAGE, others[::-1][:PAGE]),
        ('/api/jobs?limit=%d&sort=task&cursor=echo:%d' % (PAGE, ids[50000]),
         [i for i in echoes if i > ids[50000]][:PAGE]),
        ('/api/jobs?limit=%d&sort=task&status=delayed&cursor=echo:%d'
         % (PAGE, ids[20000]),
         [i for i in echoes if i > ids[20000] and i in delayedSet][:PAGE]),
    ]
    for url, expected in cases:
        loads, page = loadsFor(app, db, storage, url)
        got = [job['id'] for job in page['jobs']]
        assert got == expected, url
        assert len(got) == PAGE
        assert PAGE <= loads <= PAGE + OVERHEAD, (url, loads)
        print('%5d loads: %s' % (loads, url))
    loads, page = loadsFor(app, db, storage, '/api/counts')
    assert page['total'] == JOBS and page['counts']['delayed'] == JOBS // 10
    # Bounded whatever the number of jobs: the root, the service, the
    # counters, and the tree and first bucket of each queue partition for
    # the oldest due job.
    assert loads <= 40 + 2 * len(structures.JobQueue()._parts), loads

"""Benchmark: JSON API job pages with many jobs in a FileStorage.

    python bench/web_pages.py [--jobs 100000] [--pages 50]

Fills a temporary FileStorage with ``--jobs`` jobs (every 10th delayed,
every 100th of task "other"), then times pages of 50 jobs through the
WSGI application (webtest, no network), with a cold cache (the database
reopened) and a warm one, and prints milliseconds per page and the objects
loaded from the storage per page.
"""
import argparse
import os
import random
import sys
import tempfile
import time

import transaction
import webtest
import zope.component
import ZODB
from ZODB.FileStorage import FileStorage

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), 'src'))

from remotetask.db import getService  # noqa: E402
from remotetask.task import SimpleTask  # noqa: E402
from remotetask.web import make_app  # noqa: E402


def fill(path, jobs):
    db = ZODB.DB(FileStorage(path))
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    service = getService(conn, create=True)
    for i in range(jobs):
        service.add('other' if i % 100 == 0 else 'echo', i,
                    delay=3600 if i % 10 == 0 else None)
        if i % 20000 == 19999:
            tm.commit()
    tm.commit()
    ids = list(service.jobs.keys())
    conn.close()
    db.close()
    return ids


def urls(ids, pages, rng):
    for _ in range(pages):
        cursor = rng.choice(ids)
        yield rng.choice([
            '/api/jobs?limit=50',
            '/api/jobs?limit=50&sort=id&cursor=%d' % cursor,
            '/api/jobs?limit=50&cursor=%d' % cursor,
            '/api/jobs?limit=50&status=queued&cursor=%d' % cursor,
            '/api/jobs?limit=50&task=other&cursor=%d' % cursor,
            '/api/jobs?limit=50&status=delayed&task=other',
            '/api/counts',
        ])


def run(path, ids, pages, cold):
    storage = FileStorage(path)
    loads = [0]
    original = storage.loadBefore

    def counting(oid, tid):
        loads[0] += 1
        return original(oid, tid)
    storage.loadBefore = counting
    db = ZODB.DB(storage)
    app = webtest.TestApp(make_app(db),
                          extra_environ={'REMOTE_ADDR': '127.0.0.1'})
    rng = random.Random(42)
    started = time.perf_counter()
    for url in urls(ids, pages, rng):
        if cold:
            db.cacheMinimize()
        app.get(url)
    elapsed = time.perf_counter() - started
    db.close()
    return elapsed * 1000 / pages, loads[0] / pages


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--jobs', type=int, default=100000)
    parser.add_argument('--pages', type=int, default=50)
    args = parser.parse_args()
    for name in ('echo', 'other'):
        zope.component.provideUtility(SimpleTask(lambda input: input),
                                      name=name)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'Data.fs')
        started = time.perf_counter()
        ids = fill(path, args.jobs)
        print('%d jobs written in %.1fs' % (len(ids),
                                              time.perf_counter() - started))
        for cold in (True, False):
            ms, loads = run(path, ids, args.pages, cold)
            print('%s cache: %.1f ms per page, %.0f objects loaded per page'
                  % ('cold' if cold else 'warm', ms, loads))


if __name__ == '__main__':
    main()

"""Expiry rate (issue 17): how fast retention removes expired jobs.

A FileStorage with N completed jobs (retention 0 s), then an idle
processor (its clock: maintenance every 5 s, ticks of 0.5 s) started on it
until all are removed: jobs removed per second, from the start.  With
``--zeo`` the processor reads through a runzeo server (as in a soak).
``--profile`` prints the top of a cProfile of this thread (not the
clock's).

    PYTHONPATH=src flock /tmp/bench.lock python bench/expiry_rate.py \
        --jobs 20000 --zeo
"""
import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time

import transaction
import ZODB
import ZODB.FileStorage
import zope.component


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--jobs', type=int, default=5000)
    parser.add_argument('--profile', action='store_true')
    parser.add_argument('--zeo', action='store_true',
                        help='the processor reads through a runzeo server '
                             '(as in bench/soak.py)')
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error('--jobs must be >= 1')
    from remotetask.processor import Processor
    from remotetask.service import TaskService
    from remotetask.task import SimpleTask
    import remotetask
    zope.component.provideUtility(SimpleTask(lambda input: input),
                                  name='echo')
    with tempfile.TemporaryDirectory() as tmp:
        db = ZODB.DB(ZODB.FileStorage.FileStorage(
            os.path.join(tmp, 'Data.fs')))
        tm = transaction.TransactionManager()
        conn = db.open(tm)
        conn.root()['tasks'] = service = TaskService()
        service.__name__ = 'tasks'
        service.retention['completed'] = 0
        tm.commit()
        for start in range(0, args.jobs, 500):
            with tm:
                ids = [service.add('echo', n, now=0.0)
                       for n in range(start, min(args.jobs, start + 500))]
            with tm:
                for jobid in ids:
                    service.processNext(jobid=jobid, now=0.0)
        pdb = db
        server = None
        if args.zeo:
            import ZEO
            from remotetask import testing
            db.close()
            server = testing.ZEOServer(os.path.join(tmp, 'Data.fs')).start()
            db = pdb = ZEO.DB(server.address)
            conn = db.open(tm)
            service = conn.root()['tasks']
        # The real clock (maintenance every 5 s, ticks of 0.5 s), its
        # worker threads idle: what an idle worker's retention does.
        processor = Processor(pdb, 'tasks', concurrency=1)
        profile = cProfile.Profile() if args.profile else None
        if profile:
            profile.enable()
        began = time.perf_counter()
        processor.start()
        try:
            left = args.jobs
            while left and time.perf_counter() - began < 240:
                time.sleep(0.05)
                tm.begin()
                left = service.count('completed')
                tm.abort()
            elapsed = time.perf_counter() - began
            stats = processor.stats
        finally:
            processor.stop()
        if profile:
            profile.disable()
        print('%s: %d jobs removed in %.2f s by an idle worker\'s clock: '
              '%.0f jobs/s (%d maintenance runs, %d conflicts)' % (
                  os.path.dirname(remotetask.__file__), args.jobs - left,
                  elapsed, (args.jobs - left) / elapsed,
                  stats['maintenance_runs'], stats['conflicts']))
        if profile:
            pstats.Stats(profile).sort_stats('cumulative').print_stats(25)
        db.close()
        if server is not None:
            server.stop()


if __name__ == '__main__':
    sys.exit(main())

"""What running jobs in their Zope site costs (remotetask.zope).

Sets up the Zope instance of the tests (Zope over ZEO, site1 with a task
service, the user 'worker'), then, in one ``zconsole run`` process:

- the cost of entering and leaving ``SiteContext`` (request, traversal to
  the site, setSite, and with a user its security manager) per job;
- the drain rate of no-op jobs by one processor (one thread) of site1's
  service without ``around``, with the site, and with the site and user,
  alternating, ``ROUNDS`` times each.

    python bench/zope_context.py [jobs]

Prints a Markdown table; the figures go to docs/frameworks.md.
"""
import os
import platform
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), 'src'))

from remotetask import testing  # noqa: E402
from remotetask.tests.zopeapp import SETUP, ZopeInstance  # noqa: E402

SCRIPT = r'''
import time
import transaction
import zope.component
from remotetask.interfaces import ITask, ITaskService
from remotetask.processor import Processor
from remotetask.task import SimpleTask
from remotetask.zope.context import SiteContext

JOBS = %(jobs)d
ROUNDS = 3
zope.component.provideUtility(SimpleTask(lambda input: None), ITask,
                              name='noop')
db = app._p_jar.db()

def service(conn):
    return conn.root()['Application'].site1.getSiteManager().getUtility(
        ITaskService, 'tasks')

# 1. entering and leaving the context
conn = app._p_jar
for label, context in (('site', SiteContext(('site1',))),
                       ('site + user', SiteContext(('site1',), 'worker'))):
    svc = service(conn)
    for i in range(50):
        with context(svc, None):
            pass
    n = 2000
    started = time.perf_counter()
    for i in range(n):
        with context(svc, None):
            pass
    each = (time.perf_counter() - started) / n
    print('ENTER %%s %%.1f' %% (label, each * 1e6))
transaction.abort()

# 2. draining no-op jobs
def drain(around):
    tm = transaction.TransactionManager()
    c = db.open(tm)
    with tm:
        svc = service(c)
        for i in range(JOBS):
            svc.add('noop')
    processor = Processor(db, svc, around=around, poll_interval=0.05)
    started = time.perf_counter()
    processor.start()
    while processor.stats['completed'] < JOBS:
        time.sleep(0.01)
    elapsed = time.perf_counter() - started
    processor.stop()
    with tm:
        service(c).clean()
    c.close()
    return JOBS / elapsed

kinds = (('no around', None), ('site', SiteContext(('site1',))),
         ('site + user', SiteContext(('site1',), 'worker')))
rates = {label: [] for label, _ in kinds}
for r in range(ROUNDS):
    for label, around in kinds:
        rates[label].append(drain(around))
for label, _ in kinds:
    print('DRAIN %%s %%s' %% (label,
                             ' '.join('%%.0f' %% x for x in rates[label])))
'''


def main(jobs=1000):
    with tempfile.TemporaryDirectory() as home:
        with testing.ZEOServer(os.path.join(home, 'Data.fs')) as zeo:
            zope = ZopeInstance(os.path.join(home, 'instance'), zeo)
            zope.run(SETUP)
            out = zope.run(SCRIPT % {'jobs': jobs})
    load = os.getloadavg()[0]
    print('%s, %d cores, Python %s, %s UTC, load %.2f; %d no-op jobs per '
          'drain, ZEO on loopback, one processor thread\n'
          % (platform.platform(), os.cpu_count(), platform.python_version(),
             time.strftime('%Y-%m-%d %H:%M', time.gmtime()), load, jobs))
    enter = {}
    drains = {}
    for line in out.splitlines():
        kind, rest = line.split(' ', 1)
        label, value = rest.rsplit(' ', 1) if kind == 'ENTER' else (None, None)
        if kind == 'ENTER':
            enter[label] = float(value)
        elif kind == 'DRAIN':
            for name in ('no around', 'site + user', 'site'):
                if rest.startswith(name + ' '):
                    drains[name] = [float(x) for x in
                                    rest[len(name) + 1:].split()]
                    break
    base = sorted(drains['no around'])[len(drains['no around']) // 2]
    print('| around | enter+exit us | drain jobs/s (rounds) '
          '| median vs none |')
    print('|---|---|---|---|')
    for name in ('no around', 'site', 'site + user'):
        rates = drains[name]
        median = sorted(rates)[len(rates) // 2]
        print('| %s | %s | %s | %.2f |' % (
            name, '%.0f' % enter[name] if name in enter else '-',
            ', '.join('%.0f' % r for r in rates), median / base))


if __name__ == '__main__':
    main(*(int(a) for a in sys.argv[1:]))

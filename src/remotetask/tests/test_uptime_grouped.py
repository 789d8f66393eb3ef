"""``grouped=False``: a task whose jobs each commit alone while the
processor keeps grouping the others (the crash window of grouped commits,
see "Grouped commits" in interfaces.py and docs/workers.md)."""
import time

import pytest

from remotetask import zcml
from remotetask.task import SimpleTask
from remotetask.tests.test_processor import env, task  # noqa: F401

TASKS = 'remotetask.tests.uptimetasks'


def test_ungrouped_jobs_commit_alone_grouped_ones_together(env):
    task('plain', lambda input: input)
    task('mailer', lambda input: input, grouped=False)
    service = env.service
    plain = [service.add('plain', n) for n in range(20)]
    mail = [service.add('mailer', n) for n in range(20)]
    mixed = [service.add(name, n) for n in range(10)
             for name in ('plain', 'mailer')]
    env.tm.commit()
    env.processor(batch=20)
    everything = plain + mail + mixed
    env.wait(lambda: all(env.job(j).status == 'completed'
                         for j in everything), what='all jobs done')
    serials = {j: env.job(j)._p_serial for j in everything}
    # Each mailer job is its own transaction: no two share a commit...
    mailers = [serials[j] for j in mail + mixed[1::2]]
    assert len(set(mailers)) == len(mailers)
    assert not set(mailers) & {serials[j] for j in plain + mixed[::2]}
    # ...while the plain jobs claimed together committed together.
    assert len({serials[j] for j in plain}) < len(plain)


def test_grouped_is_a_policy_of_simple_tasks_and_zcml():
    assert SimpleTask(len).grouped is True
    assert SimpleTask(len, grouped=False).grouped is False
    with pytest.raises(ValueError, match='grouped'):
        SimpleTask(len, grouped='no')
    zcml.loadString('''
        <configure xmlns="http://namespaces.zope.org/remotetask">
          <task name="mail" function="os.getcwd" grouped="false"
                keep="3600" />
        </configure>''')
    import zope.component
    from remotetask.interfaces import ITask
    registered = zope.component.getUtility(ITask, name='mail')
    assert registered.grouped is False and registered.keep == 3600


def _started(log):
    from remotetask.tests.uptimetasks import readLog
    runs = {}
    for event, jobid, pid in readLog(log):
        if event == 'start':
            runs.setdefault(int(jobid), []).append(int(pid))
    return runs


@pytest.mark.zeo
@pytest.mark.slow
def test_a_kill_reruns_only_the_running_jobs_of_an_ungrouped_task(
        zeo, tmp_path):
    """``remotetask worker`` of 2 threads runs short ``grouped=False`` jobs
    (its claims take several, ``--batch auto``), then two that block;
    killed (SIGKILL) while both block, it leaves exactly those two to run
    again: the short ones it ran had each committed alone.  (With a
    grouped task, those of the open groups would run again too:
    bench/crashwindow.py.)"""
    import signal
    from remotetask.testing import ServiceClient, WorkerProcesses
    from remotetask.tests import uptimetasks
    uptimetasks.register()
    log, until = str(tmp_path / 'runs.log'), str(tmp_path / 'go')
    client = ServiceClient(zeo.uri, 'tasks_killungrouped')
    procs = WorkerProcesses(tmp_path)
    try:
        service = client.service
        # The short jobs first (a higher priority), so that the claims
        # that take the blocking ones take the last short ones with them.
        short = [service.add('sendmail', {'log': log, 'seconds': 0.02},
                             priority=1)
                 for n in range(24)]
        blocking = [service.add('sendmail', {'log': log, 'seconds': 120,
                                             'until': until})
                    for n in range(2)]
        client.commit()
        options = ('--concurrency', '2', '--lease', '2',
                   '--maintenance-interval', '0.5')
        victim = procs.start(zeo.uri, TASKS, client.name, *options)
        deadline = time.monotonic() + 60
        while not set(short + blocking) <= set(_started(log)):
            assert victim.poll() is None, 'the worker exited'
            assert time.monotonic() < deadline, _started(log)
            time.sleep(0.05)
        # Both threads are inside a blocking job: the short jobs ran, and
        # each committed alone (their claims held several of them).
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        service = client.service
        assert [service.jobs[j].status for j in blocking] == \
            ['processing'] * 2
        assert all(service.jobs[j].status == 'completed' for j in short), \
            service.counts()
        open(until, 'w').close()
        procs.start(zeo.uri, TASKS, client.name, *options)
        client.waitFor(lambda s: s.count('completed') == 26, timeout=60,
                       what='all jobs completed after the kill')
        runs = _started(log)
        again = {j: pids for j, pids in runs.items() if len(pids) > 1}
        assert set(again) == set(blocking), runs
        for jobid in blocking:
            assert again[jobid][0] == victim.pid != again[jobid][1]
            job = client.service.jobs[jobid]
            outcomes = [a['outcome'] for a in job.attempts]
            # (claimed ahead with the other one, it may have been handed
            # back unstarted to the other thread first)
            assert outcomes[-2:] == ['lost', 'completed'] and set(
                outcomes[:-2]) <= {'handed back'}, job.attempts
        for jobid in short:
            job = client.service.jobs[jobid]
            assert job.output == jobid and len(job.attempts) == 1
            assert runs[jobid] == [victim.pid]
    finally:
        procs.close()
        client.close()

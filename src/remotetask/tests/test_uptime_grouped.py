"""``grouped=False``: a task whose jobs each commit alone while the
processor keeps grouping the others (the crash window of grouped commits,
see "Grouped commits" in interfaces.py and docs/workers.md)."""
import pytest

from remotetask import zcml
from remotetask.task import SimpleTask
from remotetask.tests.test_processor import env, task  # noqa: F401


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

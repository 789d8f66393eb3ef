"""ATP handlers used by the tracker tests (importable by dotted path)."""
from remotetask import tracker


def silent(taskStatus, input):
    """Sets no status: the task ends FINISHED."""


def succeed(taskStatus, input):
    taskStatus.storeResponse('<ok/>')
    taskStatus.setSuccess('all %s done' % input)


def raises(taskStatus, input):
    raise ValueError('cannot handle %r' % (input,))


def pauses(taskStatus, input):
    """Pauses and resumes itself, and reads its own status meanwhile."""
    taskStatus.setPaused('waiting for data')
    seen = [taskStatus.getStatus()]
    taskStatus.setRunning('data arrived')
    seen.append(taskStatus.getStatus())
    taskStatus.setFailure('giving up')
    seen.append(taskStatus.getStatus())
    taskStatus.storeResponse(repr(seen), 'text/plain')
    taskStatus.setSuccess('changed my mind')


def enqueues(taskStatus, input):
    """Enqueues a follow-up task (joins the running job's transaction)."""
    tracker.enqueueTask(input, 'follow-up of %s' % taskStatus.task_id, None)


def sleeps(taskStatus, input):
    """Runs ``seconds`` (to become a zombie), then creates ``marker``."""
    import time
    seconds, marker = input
    time.sleep(float(seconds))
    open(marker, 'w').close()


def waits(taskStatus, input):
    """Runs until the file ``input`` exists (at most 60 s)."""
    import os
    import time
    deadline = time.monotonic() + 60
    while not os.path.exists(input) and time.monotonic() < deadline:
        time.sleep(0.05)
    taskStatus.storeResponse('gate opened', 'text/plain')


def introspects(taskStatus, input):
    """Every TaskStatus method, from inside the handler; stores what it
    saw, then fails if ``input`` says so ('raise', 'fail')."""
    seen = [taskStatus.getInfo(), taskStatus.getIdentifier(),
            taskStatus.getStatus(),
            (taskStatus.RUNNING, taskStatus.PAUSED, taskStatus.FAILED)]
    taskStatus.setSuccess('looked')
    seen.append(taskStatus.getStatus())
    taskStatus.storeResponse(repr(seen), 'text/plain')
    if input == 'raise':
        raise RuntimeError('after setSuccess')
    if input == 'fail':
        taskStatus.setFailure('changed my mind')

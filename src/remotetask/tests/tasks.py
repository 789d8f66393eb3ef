"""Task objects used by the tests (importable by ZCML and worker processes)."""
from remotetask.task import SimpleTask, TaskBase


class Upper(TaskBase):
    """A task class of its own: upper-cases its input."""

    def __call__(self, service, jobid, input):
        return str(input).upper()


upper = Upper()
echo = SimpleTask(lambda input: input)

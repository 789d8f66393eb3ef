"""``python -m remotetask`` is the ``remotetask`` command."""
from remotetask.cli import entry

entry()

"""The cold-start bench's finish line, shared by every system's no-op task.

``mark()`` appends one byte to the file named by ``$BENCH_COLD_COUNT``
(``O_APPEND``: writes of several processes do not mix), so the bench sees
how many jobs are done, by any number of worker processes, by the file's
size.  Imports nothing heavy: its import is part of each worker's start.
"""
import os

_fd = None


def mark():
    global _fd
    if _fd is None:
        _fd = os.open(os.environ['BENCH_COLD_COUNT'],
                      os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(_fd, b'.')

"""The garbage collector during a command's start-up and at its exit.

A command's start-up is mostly imports (the ZODB, BTrees' 22 families of
classes, click...), which allocate tens of thousands of objects that live
as long as the process.  Python's cyclic garbage collector runs every few
hundred allocations and, now and then, walks all of them, finding nothing
to free; and the interpreter's finalization at exit walks them all again.
Together that is 20-40 ms of a short command such as ``remotetask status``
(``bench/startup.py``; docs/startup.md).

So the program (``python -m remotetask``, the ``remotetask`` script:
``remotetask.cli.entry``) calls:

- ``begin()`` first: the collector is off during start-up;
- ``ready()`` once start-up is done (a database command once its database
  is open, a worker once its processor runs): the objects alive then are
  moved to the permanent generation (``gc.freeze()``: they are never walked
  again; they are still freed by reference counting) and the collector is
  back on, with its usual thresholds, for everything allocated afterwards;
- ``end()`` when the command has finished: everything is frozen, so the
  finalization does not walk it (the process is about to exit).

Nothing here runs when the commands are called in-process
(``remotetask.cli.run``, tests): ``ready()`` and ``end()`` do nothing
unless ``begin()`` was called, and ``begin()`` is called only by the
program's entry point.  A command that never calls ``ready()`` (``--help``,
``tasks``, ``user``: no database, a few milliseconds of work) runs with the
collector off until it exits.
"""
import gc

_started = False


def begin():
    """The program starts: the collector is off until ``ready()``."""
    global _started
    if _started:
        return
    _started = True
    gc.disable()


def ready():
    """Start-up is done: freeze what it allocated, collector back on."""
    if not _started:
        return
    gc.freeze()
    gc.enable()


def end():
    """The command finished: freeze everything before the process exits
    (its finalization then has less to walk)."""
    if not _started:
        return
    gc.freeze()

"""Registers an ``echo`` task when imported (``--import`` in CLI tests)."""
import zope.component

from remotetask.task import SimpleTask


def echo(input):
    return input


zope.component.provideUtility(SimpleTask(echo), name='echo')

"""Job lifecycle events, sent with ``zope.event``.  See interfaces.IJobEvent.

A failing subscriber is logged and never stops a job or a worker.
Subscribers are plain ``zope.event`` subscribers or handlers registered
with ``zope.component`` (``provideHandler``, ZCML ``<subscriber>``) for
the event interfaces.
"""
import logging

import zope.component.event  # noqa: F401  (dispatches to those handlers)
import zope.event
import zope.interface

from remotetask import interfaces

log = logging.getLogger('remotetask')


@zope.interface.implementer(interfaces.IJobEvent)
class JobEvent:

    def __init__(self, job, service):
        self.job = job
        self.service = service

    def __repr__(self):
        return '<%s %r>' % (self.__class__.__name__, self.job)


@zope.interface.implementer(interfaces.IJobStarted)
class JobStarted(JobEvent):
    pass


@zope.interface.implementer(interfaces.IJobCompleted)
class JobCompleted(JobEvent):
    pass


@zope.interface.implementer(interfaces.IJobFailed)
class JobFailed(JobEvent):
    pass


@zope.interface.implementer(interfaces.IJobRetried)
class JobRetried(JobEvent):
    pass


@zope.interface.implementer(interfaces.IJobCancelled)
class JobCancelled(JobEvent):
    pass


def notify(event):
    try:
        zope.event.notify(event)
    except Exception:
        log.exception('a subscriber failed on %r; ignored', event)

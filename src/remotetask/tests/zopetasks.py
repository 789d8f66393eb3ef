"""Tasks and content classes of the Zope application the tests start
(``test_zope.py``): registered by the instance's site.zcml."""
import time

import persistent
import zope.interface
from zope.component import getUtility
from zope.component.hooks import getSite

from remotetask.job import currentJob


class IGreeter(zope.interface.Interface):
    """A local utility of a site."""


@zope.interface.implementer(IGreeter)
class Greeter(persistent.Persistent):

    def __init__(self, greeting):
        self.greeting = greeting


def greet(input):
    """Look the site's greeter up: found only while the site is set."""
    site = getSite()
    return {'site': site.getId(), 'text': '%s, %s' % (
        getUtility(IGreeter).greeting, input)}


def addFolder(input):
    """Add a folder to the current site through Zope's security: the
    factory needs the 'Add Folders' permission."""
    from AccessControl import getSecurityManager
    site = getSite()
    factory = site.restrictedTraverse('manage_addProduct/OFSP/manage_addFolder')
    factory(input)
    return {'user': getSecurityManager().getUser().getId(),
            'url': site[input].absolute_url()}


def retitle(input):
    """The README's example: edit content, checked as the job's user."""
    from AccessControl import Unauthorized, getSecurityManager
    doc = getSite().restrictedTraverse(input['path'])
    if not getSecurityManager().checkPermission('Manage properties', doc):
        raise Unauthorized('may not edit %s' % input['path'])
    doc.manage_changeProperties(title=input['title'])
    return doc.absolute_url()


def slow(input):
    """Run until cancelled (the processor stops) or ``input`` seconds."""
    deadline = time.monotonic() + float(input)
    context = currentJob()
    while time.monotonic() < deadline and not context.cancelled:
        time.sleep(0.05)
    return 'done'

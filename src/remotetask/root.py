"""Finding the task service at the root of a database.

The service lives at the database root under a key (``DEFAULT_SERVICE``,
``tasks``, by default).  ``findService`` is used by the processor (which is
handed the name or oid of its service and looks it up in each of its
connections) and by ``remotetask.db.getService`` (which also creates a
missing one); it imports no implementation module, so that layers point one
way: ``service`` <- ``processor`` and ``service`` <- ``db``.
"""
from remotetask.interfaces import ConfigurationError, ITaskService

DEFAULT_SERVICE = 'tasks'


def findService(root, name=DEFAULT_SERVICE):
    """The service at ``root[name]`` (``root``: a connection or its root);
    None if the key is missing.

    :raises ConfigurationError: if something else is stored under ``name``.
    """
    if hasattr(root, 'root'):
        root = root.root()
    service = root.get(name)
    if service is not None and not ITaskService.providedBy(service):
        raise ConfigurationError('%r at the database root is a %s, not a '
                                 'TaskService' % (name, type(service).__name__))
    upgrade = getattr(service, 'upgradeLayout', None)
    if upgrade is not None:
        upgrade()       # a service stored by an older version
    return service


def getService(root, name=DEFAULT_SERVICE):
    """The service at ``root[name]``.

    :raises ConfigurationError: if there is none, or something else.
    """
    service = findService(root, name)
    if service is None:
        raise ConfigurationError(
            'no task service under %r at the database root' % name)
    return service

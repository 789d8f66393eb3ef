"""``/api/health``: the storage condition this process saw (a full disk,
see ``remotetask.health``).

``/api/retention``: the retention of the service (``remotetask.
retention``), shown and set; and the jobs removed so far.

``GET`` answers ``{"retention": {status: seconds or null}, "defaults":
{...}, "removed": {reason: count}}``.  ``PUT`` takes an object with some of
the final statuses, each seconds >= 0 or null (keep for ever), and sets
those (the others stay); a bad value is a 400 naming it, and nothing is
changed.
"""
from remotetask import health, retention
from remotetask.web.api import body
from remotetask.web.auth import MANAGE, VIEW


def includeme(config):
    config.add_route('api_health', '/api/health')
    config.add_view(showHealth, route_name='api_health',
                    request_method='GET', renderer='json', permission=VIEW)
    config.add_route('api_retention', '/api/retention')
    config.add_view(showRetention, route_name='api_retention',
                    request_method='GET', renderer='json', permission=VIEW)
    config.add_view(setRetention, route_name='api_retention',
                    request_method='PUT', renderer='json',
                    permission=MANAGE)


def showRetention(request):
    service = request.service
    return {'retention': dict(service.retention),
            'defaults': dict(retention.DEFAULTS),
            'removed': retention.removedCounts(service)}


def setRetention(request):
    data = body(request, tuple(retention.DEFAULTS))
    request.service.retention.update(data)
    return showRetention(request)


def showHealth(request):
    return health.STATE.info()

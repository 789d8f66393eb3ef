"""XML-RPC at /RPC2: lovely.remotetask's methods, plus cron jobs and the
tracker's by-identifier calls.

Every error is an XML-RPC fault whose string says what was wrong; the
fault codes are:

======  ==============================================================
1       unknown task (``UnknownTaskError``)
2       unknown job (``JobNotFoundError``)
3       the job's status does not allow it (``InvalidStatusError``)
4       the input or result can not be stored or sent
5       bad cron schedule (``InvalidScheduleError``)
6       other remotetask errors and bad values
7       the database was busy (write conflicts) or unavailable: try again
8       the disk of the database is full: nothing was stored
        (``DiskFullError``, see ``remotetask.health``)
-32700  the request is not XML-RPC (malformed XML)
-32601  no such method
-32602  wrong arguments for the method
-32603  internal error (logged)
======  ==============================================================

Requests are parsed with defusedxml: a DTD with entity declarations (the
"billion laughs") or an external entity is refused (-32700) before
anything is expanded, as is a request whose decoded text is larger than
the body limit or whose arrays and structs nest deeper than
``MAX_DEPTH``.  Every argument is checked against what its parameter
takes (``PARAMETERS``) before the method runs; a fault -32602 names the
argument (``jobid must be an integer (a job id), not '1'``).

Authentication and permissions are HTTP's: 401 without credentials, 403
for a viewer calling a method that changes something.  A fault rolls back
the request's transaction.
"""
import inspect
import logging
import xml.parsers.expat
import xmlrpc.client

import defusedxml
import defusedxml.xmlrpc

from pyramid.httpexceptions import HTTPException, HTTPForbidden
from pyramid.response import Response
from pyramid_retry import is_last_attempt
from transaction.interfaces import TransientError
from ZODB.POSException import StorageError

from remotetask import health, interfaces
from remotetask.numbers import isInt, isNumber, shortRepr
from remotetask.web import routing as webrouting
from remotetask.web.app import forbidden, wakeAfterCommit
from remotetask.web.auth import MANAGE, VIEW

log = logging.getLogger('remotetask.web')

UNKNOWN_TASK, UNKNOWN_JOB, INVALID_STATUS, INVALID_INPUT = 1, 2, 3, 4
INVALID_SCHEDULE, INVALID_VALUE, TRY_AGAIN, DISK_FULL = 5, 6, 7, 8
PARSE_ERROR, NO_METHOD, BAD_ARGUMENTS, INTERNAL = (-32700, -32601, -32602,
                                                   -32603)

_CODES = ((interfaces.UnknownTaskError, UNKNOWN_TASK),
          (interfaces.JobNotFoundError, UNKNOWN_JOB),
          (interfaces.InvalidStatusError, INVALID_STATUS),
          (interfaces.InvalidInputError, INVALID_INPUT),
          (interfaces.InvalidScheduleError, INVALID_SCHEDULE),
          (interfaces.RemoteTaskError, INVALID_VALUE),
          (ValueError, INVALID_VALUE))


def includeme(config):
    config.add_route('xmlrpc', '/RPC2')
    config.add_view(endpoint, route_name='xmlrpc', request_method='POST',
                    permission=VIEW)
    config.add_view(notPost, route_name='xmlrpc', permission=VIEW,
                    request_method=('GET', 'HEAD', 'PUT', 'DELETE',
                                    'PATCH', 'OPTIONS'))
    # Whatever fails around a method (a conflict still there after the
    # retries, the database gone) is a fault too, never a 500.
    config.add_exception_view(failed, context=Exception,
                              route_name='xmlrpc')


def notPost(request):
    response = Response('XML-RPC: POST a methodCall to this URL\n',
                        status=405, content_type='text/plain')
    response.allow = ('POST',)
    return response


def failed(exc, request):
    """A fault for an exception no method turned into one (HTTP errors
    stay themselves: 401, 403)."""
    if isinstance(exc, HTTPForbidden):
        return forbidden(exc, request)  # (a route's view comes first)
    if isinstance(exc, HTTPException):
        return exc
    full = health.check(exc)
    if full is not None:
        return fault(request, DISK_FULL, str(full))
    if isinstance(exc, (TransientError, StorageError)):
        if is_last_attempt(request):
            log.warning('XML-RPC request failed, the client may try '
                        'again: %r', exc)
        return fault(request, TRY_AGAIN, 'the database was busy or not '
                     'available (%s); try again' % type(exc).__name__)
    log.error('XML-RPC request failed', exc_info=(type(exc), exc,
                                                  exc.__traceback__))
    return fault(request, INTERNAL, 'internal error: %s (see the server '
                 'log)' % type(exc).__name__)


# -- Methods: each is (permission, function(request, ...)) --------------------

def getAvailableTasks(request):
    """The names of the registered tasks, sorted."""
    return sorted(request.service.getAvailableTasks())


def getWorkers(request):
    """The live workers of the service (id, host, pid, kind, version,
    started, heartbeat, concurrency, tasks, running, done, failed...)."""
    return request.service.workers()


def add(request, task, input=None, options=None, after=None):
    """Add a job; return its id.  ``options``: a struct of startLater,
    delay, queue, priority, unique_key, after (or lovely's startLater
    flag); ``after``: job ids (an array) it waits for (it is deferred
    until they all completed)."""
    kw = webrouting.addOptions(options)
    if after is not None:
        kw['after'] = after
    jobid = request.service.add(_name(task), input, **kw)
    wakeAfterCommit(request)
    return jobid


def chain(request, steps, after=None):
    """Add a chain of [task, input] steps (or {task, input} structs), each
    waiting for the previous one (a nil input: the previous result); return
    their ids."""
    from remotetask.web.workflows import steps as _steps
    ids = request.service.chain(_steps(steps, 'chain'), after=after)
    wakeAfterCommit(request)
    return ids


def group(request, steps, then=None, after=None):
    """Add a group of [task, input] steps and a then step run once after
    all of them (a nil input: their results, in order); return [ids,
    thenId]."""
    from remotetask.web.workflows import step, steps as _steps
    if then is not None:
        then = step(then, 'the then of the group')
    ids, thenId = request.service.group(_steps(steps, 'group'), then=then,
                                        after=after)
    wakeAfterCommit(request)
    return [ids, thenId]


def addCronJob(request, task, input=None, minute=(), hour=(), dayOfMonth=(),
               month=(), dayOfWeek=(), delay=None, expression=None,
               timezone=None, interval=None, options=None):
    """Add a cron job; return its id.  ``delay``: lovely's one-off delayed
    job; ``interval``: run every so many seconds; ``options``: a struct
    of queue and priority."""
    fields = {'minute': minute, 'hour': hour, 'dayOfMonth': dayOfMonth,
              'month': month, 'dayOfWeek': dayOfWeek}
    jobid = request.service.addCronJob(
        _name(task), input, delay=delay, expression=expression or None,
        timezone=timezone or None, interval=interval,
        **{name: tuple(value) for name, value in fields.items()},
        **webrouting.options(options, ('queue', 'priority')))
    wakeAfterCommit(request)
    return jobid


def _name(task):
    """``task``, checked to be a task name (a string)."""
    checkArgument('task', task)
    return task


def _id(jobid):
    """``jobid``, checked to be a job id (an integer)."""
    checkArgument('jobid', jobid)
    return jobid


# -- Arguments: what each parameter (by its name) takes -----------------------

_INTS = ('an array of integers',
         lambda v: isinstance(v, (list, tuple)) and all(map(isInt, v)))
_TEXT_OR_NIL = ('a string or nil', lambda v: v is None or isinstance(v, str))

#: parameter name -> (what it must be, test).  ``input`` takes anything.
PARAMETERS = {
    'jobid': ('an integer (a job id)', isInt),
    'task': ('a string (a task name)', lambda v: isinstance(v, str)),
    'minute': _INTS, 'hour': _INTS, 'dayOfMonth': _INTS, 'month': _INTS,
    'dayOfWeek': _INTS,
    'delay': ('a number or nil', lambda v: v is None or isNumber(v)),
    'interval': ('a number or nil', lambda v: v is None or isNumber(v)),
    'expression': _TEXT_OR_NIL,
    'timezone': _TEXT_OR_NIL,
    'type': ('a string (a task type)', lambda v: isinstance(v, str)),
    'identifier': ('a string (a task identifier)',
                   lambda v: isinstance(v, str)),
    'name': ('a string (a method name)', lambda v: isinstance(v, str)),
}


def checkArgument(name, value):
    """Fault -32602 naming ``name`` if ``value`` is not what the parameter
    ``name`` takes."""
    rule = PARAMETERS.get(name)
    if rule is not None and not rule[1](value):
        raise xmlrpc.client.Fault(BAD_ARGUMENTS, '%s must be %s, not %s'
                                  % (name, rule[0], _describe(value)))


def _describe(value):
    """A short repr of a value, with its XML-RPC type for containers."""
    if isinstance(value, dict):
        return 'a struct %s' % shortRepr(value)
    return shortRepr(value)


def startJob(request, jobid):
    """Queue a job added with startLater: True; False if it is not
    waiting to be started (lovely's answers)."""
    started = request.service.startJob(_id(jobid))
    if started:
        wakeAfterCommit(request)
    return started


def cancel(request, jobid):
    """Cancel a job: True (a running one is asked to stop, see
    ``ITaskService.cancel``); False if it already ended, so that a client
    that raced a fast worker gets lovely's answer rather than a fault.  An
    unknown id is still a fault."""
    try:
        request.service.cancel(_id(jobid))
    except interfaces.InvalidStatusError:
        return False
    return True


def getStatus(request, jobid):
    """The status of a job."""
    return request.service.getStatus(_id(jobid))


def getResult(request, jobid):
    """The result of a job (nil until it completed)."""
    return request.service.getResult(_id(jobid))


def getError(request, jobid):
    """The error of a job (nil unless it failed)."""
    return request.service.getError(_id(jobid))


def _tracker():
    try:
        from remotetask import trackerdata
    except ImportError:
        raise xmlrpc.client.Fault(
            NO_METHOD, 'the tracker facade (remotetask.trackerdata) is not '
                       'installed in this server')
    return trackerdata


def _trackerTask(request, type, identifier):
    trackerdata = _tracker()
    service = request.service
    try:
        return trackerdata.findByIdentifier(
            service, trackerdata.getData(service), type, identifier)
    except trackerdata.TaskTypeNotFound as e:
        raise xmlrpc.client.Fault(UNKNOWN_TASK, str(e))


def getTaskStatusByIdentifier(request, type, identifier):
    """The tracker's [status code, status text] of task ``identifier`` of
    task type ``type``."""
    trackerdata = _tracker()
    job, record = _trackerTask(request, type, identifier)
    code = trackerdata.atpStatus(job, record)
    return [code, trackerdata.STATUS2TEXT[code]]


def getTaskResponse(request, type, identifier):
    """The tracker's [response, MIME type] of task ``identifier`` of task
    type ``type`` (fault 6 if it stored none)."""
    job, record = _trackerTask(request, type, identifier)
    if record.response is None:
        raise xmlrpc.client.Fault(INVALID_VALUE, 'task %r of type %r has no '
                                  'response' % (identifier, type))
    return [record.response.response, record.response.mimeType]


def listMethods(request):
    """The methods of this server."""
    return sorted(METHODS)


def methodHelp(request, name):
    """The documentation of method ``name``."""
    if name not in METHODS:
        raise xmlrpc.client.Fault(NO_METHOD, 'no method %r' % (name,))
    func = METHODS[name][1]
    return '%s%s: %s' % (name, _signature(func), inspect.getdoc(func))


METHODS = {
    'getAvailableTasks': (VIEW, getAvailableTasks),
    'getWorkers': (VIEW, getWorkers),
    'add': (MANAGE, add),
    'chain': (MANAGE, chain),
    'group': (MANAGE, group),
    'addCronJob': (MANAGE, addCronJob),
    'startJob': (MANAGE, startJob),
    'cancel': (MANAGE, cancel),
    'getStatus': (VIEW, getStatus),
    'getResult': (VIEW, getResult),
    'getError': (VIEW, getError),
    'getTaskStatusByIdentifier': (VIEW, getTaskStatusByIdentifier),
    'getTaskResponse': (VIEW, getTaskResponse),
    'system.listMethods': (VIEW, listMethods),
    'system.methodHelp': (VIEW, methodHelp),
}
# Queues, pauses, bulk actions.
METHODS.update(webrouting.METHODS)


def _signature(func):
    sig = inspect.signature(func)
    return str(sig.replace(parameters=list(sig.parameters.values())[1:]))


# -- The endpoint -------------------------------------------------------------

def _xml(payload):
    return Response(body=payload.encode('utf-8'),
                    content_type='text/xml', charset='utf-8')


def fault(request, code, message):
    """A fault response; the transaction is rolled back."""
    try:
        request.tm.doom()
    except ValueError:
        pass    # (its commit failed already: an exception view's fault)
    return _xml(xmlrpc.client.dumps(xmlrpc.client.Fault(
        code, message.encode('utf-8', 'backslashreplace').decode('utf-8')),
        methodresponse=True, allow_none=True))


#: Deepest nesting of arrays and structs in a request.
MAX_DEPTH = 32


class RequestTooLarge(ValueError):
    """The decoded request is larger than the body limit."""


class _Unmarshaller(xmlrpc.client.Unmarshaller):
    """xmlrpc's unmarshaller, with a limit on the text it collects and on
    the nesting of arrays and structs."""

    def __init__(self, limit):
        super().__init__(use_builtin_types=True)
        self._limit = limit
        self._size = 0

    def start(self, tag, attrs):
        super().start(tag, attrs)
        if len(self._marks) > MAX_DEPTH:
            raise RequestTooLarge('arrays and structs nest deeper than %d'
                                  % MAX_DEPTH)

    def data(self, text):
        self._size += len(text)
        if self._size > self._limit:
            raise RequestTooLarge('the decoded request is larger than the '
                                  'limit of %d characters' % self._limit)
        super().data(text)


def parse(body, limit):
    """``(params, method name)`` of an XML-RPC request, parsed by
    defusedxml (see the module documentation)."""
    unmarshaller = _Unmarshaller(limit)
    parser = defusedxml.xmlrpc.DefusedExpatParser(unmarshaller)
    parser.feed(body)
    parser.close()
    return unmarshaller.close(), unmarshaller.getmethodname()


def endpoint(request):
    web = request.registry.remotetask
    try:
        params, name = parse(request.body, getattr(web, 'max_body', 1 << 20))
    except defusedxml.DefusedXmlException as e:
        return fault(request, PARSE_ERROR, 'refused: %s (DTDs with entity '
                     'declarations and external references are not '
                     'accepted)' % e)
    except RequestTooLarge as e:
        return fault(request, PARSE_ERROR, 'refused: %s' % e)
    except (xml.parsers.expat.ExpatError, xmlrpc.client.ResponseError,
            xmlrpc.client.Fault, ValueError, TypeError, IndexError,
            OverflowError) as e:
        return fault(request, PARSE_ERROR, 'not an XML-RPC request: %s'
                     % shortRepr(str(e), 200))
    if name is None or name not in METHODS:
        return fault(request, NO_METHOD, 'no method %s; methods: %s'
                     % (shortRepr(name), ', '.join(sorted(METHODS))))
    permission, func = METHODS[name]
    if not request.has_permission(permission):
        raise HTTPForbidden(result=request.has_permission(permission))
    try:
        bound = inspect.signature(func).bind(request, *params)
    except TypeError as e:
        return fault(request, BAD_ARGUMENTS, 'bad arguments for %s%s: %s'
                     % (name, _signature(func), e))
    try:
        for argument, value in list(bound.arguments.items())[1:]:
            checkArgument(argument, value)
        result = func(request, *params)
    except xmlrpc.client.Fault as f:
        return fault(request, f.faultCode, f.faultString)
    except TransientError:
        raise  # pyramid_retry runs the request again
    except Exception as e:
        full = health.check(e)
        if full is not None:
            return fault(request, DISK_FULL, str(full))
        for cls, code in _CODES:
            if isinstance(e, cls):
                return fault(request, code, str(e))
        if isinstance(e, (TypeError, OverflowError)):
            return fault(request, BAD_ARGUMENTS, 'bad arguments for %s: %s'
                         % (name, e))
        log.exception('XML-RPC %s failed', name)
        return fault(request, INTERNAL, 'internal error in %s: %s (see the '
                     'server log)' % (name, type(e).__name__))
    try:
        return _xml(xmlrpc.client.dumps((result,), methodresponse=True,
                                        allow_none=True))
    except (TypeError, OverflowError, ValueError, RecursionError) as e:
        # (UnicodeEncodeError, of a lone surrogate, is a ValueError)
        return fault(request, INVALID_INPUT, 'the result of %s can not be '
                     'sent over XML-RPC: %s: %s' % (
                         name, type(e).__name__, shortRepr(str(e), 200)))

"""Reading ``<product-config remotetask>``: which services to start, how.

``autostart`` names services in lovely.remotetask's syntax, separated by
commas and/or white space::

    site@service    the local task service ``service`` of the site ``site``
                    (a path from the root folder: ``folder/site`` for a
                    site further down)
    @service        the service ``service`` of the root folder (the Zope
                    application object when it is a site)
    site@*          every task service of ``site``
    *@service       the services named ``service`` of the root folder and of
                    every site in it
    *@*             every task service of the root folder and of every site
                    in it

The other options (all optional)::

    concurrency 2       worker threads per service (default 1)
    lease 30            seconds a claim holds unless renewed (default 30)
    batch auto          jobs claimed at once: auto or a number (default auto)
    grace 30            seconds a running job may take to finish at
                        shut-down before it is handed back (default 30)
    user admin          the Zope user jobs run as (default: none, i.e.
                        Anonymous): looked up in the acl_users of the site,
                        then of its parents up to the root
    server-url http://www.example.com
                        what ``absolute_url()`` gives in jobs (default
                        http://localhost:8080)
    stop-on-sigterm on  make SIGTERM a clean shut-down (default on; see
                        ``remotetask.zope.autostart``)

``readConfig(mapping)`` returns an ``AutostartConfig`` and the list of
problems found (one line each); a bad value is reported and its default
used, a malformed autostart entry is reported and skipped, so one mistake
never keeps the rest from starting.
"""
import re
from urllib.parse import urlsplit

#: A site path segment or a service name.
NAME = r'[^\s@*/,]+'
SPEC = re.compile(r'^(?P<site>|\*|%s(?:/%s)*)@(?P<service>\*|%s)$'
                  % (NAME, NAME, NAME))

ROOT = ''
ANY = '*'


class Spec:
    """One autostart entry: ``site`` ('' for the root folder, '*' for all)
    and ``service`` ('*' for all)."""

    def __init__(self, site, service):
        self.site = site
        self.service = service

    def __repr__(self):
        return '%s@%s' % (self.site, self.service)

    def __eq__(self, other):
        return isinstance(other, Spec) and (self.site, self.service) == (
            other.site, other.service)

    def __hash__(self):
        return hash((self.site, self.service))


def parseAutostart(text):
    """The specs in an autostart value, and the problems (one line each).

    >>> parseAutostart('site1@tasks, @tasks  *@* site2@*, a/b@t')
    ([site1@tasks, @tasks, *@*, site2@*, a/b@t], [])
    >>> specs, problems = parseAutostart('site1, x@y@z, s@, ok@tasks, s@t*')
    >>> specs
    [ok@tasks]
    >>> for line in problems: print(line)
    autostart: 'site1' is not site@service (use @service for the root folder)
    autostart: 'x@y@z' is not site@service (use @service for the root folder)
    autostart: 's@' is not site@service (use @service for the root folder)
    autostart: 's@t*' is not site@service (use @service for the root folder)
    """
    specs, problems = [], []
    for token in re.split(r'[\s,]+', text or ''):
        if not token:
            continue
        match = SPEC.match(token)
        if match is None:
            problems.append('autostart: %r is not site@service (use '
                            '@service for the root folder)' % token)
            continue
        spec = Spec(match.group('site'), match.group('service'))
        if spec not in specs:
            specs.append(spec)
    return specs, problems


def _positiveInt(value):
    number = int(value)
    if number < 1:
        raise ValueError
    return number


def _positiveFloat(value):
    number = float(value)
    if not number > 0:
        raise ValueError
    return number


def _nonNegativeFloat(value):
    number = float(value)
    if not number >= 0:
        raise ValueError
    return number


def _batch(value):
    return 'auto' if value.strip().lower() == 'auto' else _positiveInt(value)


def _flag(value):
    text = value.strip().lower()
    if text in ('on', 'true', 'yes', '1'):
        return True
    if text in ('off', 'false', 'no', '0'):
        return False
    raise ValueError


def _url(value):
    parts = urlsplit(value.strip())
    if parts.scheme not in ('http', 'https') or not parts.hostname:
        raise ValueError
    parts.port     # raises ValueError for a bad port
    return value.strip().rstrip('/')


#: option: (attribute, parser, default, what a good value is)
OPTIONS = {
    'concurrency': ('concurrency', _positiveInt, 1, 'an integer >= 1'),
    'lease': ('lease', _positiveFloat, 30.0, 'a positive number of seconds'),
    'batch': ('batch', _batch, 'auto', "'auto' or an integer >= 1"),
    'grace': ('grace', _nonNegativeFloat, 30.0, 'a number of seconds >= 0'),
    'user': ('user', str.strip, None, 'a user id'),
    'server-url': ('server_url', _url, 'http://localhost:8080',
                   'an http(s):// URL'),
    'stop-on-sigterm': ('stop_on_sigterm', _flag, True, 'on or off'),
}


class AutostartConfig:
    """What ``<product-config remotetask>`` asks for (see the module)."""

    def __init__(self, specs=(), **options):
        self.specs = list(specs)
        for attribute, parse, default, what in OPTIONS.values():
            setattr(self, attribute, options.pop(attribute, default))
        if options:
            raise TypeError('unknown options: %s' % ', '.join(options))

    def processorOptions(self):
        """Keyword arguments for ``Processor``."""
        return dict(concurrency=self.concurrency, lease=self.lease,
                    batch=self.batch, grace=self.grace)


def readConfig(mapping):
    """An ``AutostartConfig`` from a product-config mapping, and the list
    of problems found (see the module).

    >>> config, problems = readConfig({'autostart': 'site1@tasks',
    ...     'concurrency': '3', 'lease': 'soon', 'colour': 'blue'})
    >>> config.specs, config.concurrency, config.lease
    ([site1@tasks], 3, 30.0)
    >>> for line in problems: print(line)
    unknown option 'colour' (known: autostart, batch, concurrency, grace,
    lease, server-url, stop-on-sigterm, user)
    lease: 'soon' is not a positive number of seconds; using 30.0
    """
    problems = []
    values = {}
    specs = []
    for key, value in sorted((mapping or {}).items()):
        name = key.strip().lower().replace('_', '-')
        value = '' if value is None else str(value)
        if name == 'autostart':
            specs, found = parseAutostart(value)
            problems.extend(found)
        elif name in OPTIONS:
            attribute, parse, default, what = OPTIONS[name]
            try:
                parsed = parse(value)
                if parsed == '':
                    raise ValueError
                values[attribute] = parsed
            except (TypeError, ValueError):
                problems.append('%s: %r is not %s; using %s'
                                % (name, value, what, default))
        else:
            problems.append('unknown option %r (known: %s)' % (
                key, ', '.join(sorted(['autostart'] + list(OPTIONS)))))
    return AutostartConfig(specs, **values), problems

"""A real Zope 5 instance for the tests: its etc/ (zope.conf, zope.ini,
site.zcml) written from a template, its database on a ZEO server so the
test process can look at it while Zope runs, ``zconsole run`` for set-up
scripts and ``runwsgi`` (waitress) to run it."""
import os
import subprocess
import sys
import textwrap
import time

from remotetask import testing

ZOPE_CONF = """\
%define INSTANCE {home}
instancehome $INSTANCE
<zodb_db main>
  <zeoclient>
    server 127.0.0.1:{zeoport}
    storage 1
    name main
    cache-size 16MB
  </zeoclient>
  mount-point /
</zodb_db>
{productConfig}
"""

ZOPE_INI = """\
[app:main]
use = egg:Zope#main
zope_conf = %(here)s/zope.conf

[server:main]
use = egg:waitress#main
host = 127.0.0.1
port = {port}

[loggers]
keys = root

[handlers]
keys = eventlog

[formatters]
keys = generic

[logger_root]
level = INFO
handlers = eventlog

[handler_eventlog]
class = FileHandler
args = (r'{home}/var/log/event.log', 'a')
level = NOTSET
formatter = generic

[formatter_generic]
format = %(asctime)s %(levelname)s [%(name)s] %(message)s
"""

SITE_ZCML = """\
<configure
    xmlns="http://namespaces.zope.org/zope"
    xmlns:five="http://namespaces.zope.org/five"
    xmlns:remotetask="http://namespaces.zope.org/remotetask">

  <include package="Zope2.App" />
  <five:loadProducts file="meta.zcml"/>
  <five:loadProducts />

  <include package="remotetask.zope" />

  <remotetask:task name="greet"
                   function="remotetask.tests.zopetasks.greet" />
  <remotetask:task name="addFolder"
                   function="remotetask.tests.zopetasks.addFolder" />
  <remotetask:task name="retitle"
                   function="remotetask.tests.zopetasks.retitle" />
  <remotetask:task name="slow"
                   function="remotetask.tests.zopetasks.slow" />
</configure>
"""

#: Sets up the application: sites with task services and local utilities,
#: users (run by ``zconsole run`` with ``app`` bound to the application).
SETUP = """\
import transaction
from OFS.Folder import manage_addFolder
from OFS.userfolder import manage_addUserFolder
from Products.Five.component import enableSite
from Products.Five.component.interfaces import IObjectManagerSite
from zope.component.globalregistry import getGlobalSiteManager
from zope.component.persistentregistry import PersistentComponents

from remotetask.interfaces import ITaskService
from remotetask.service import TaskService
from remotetask.tests.zopetasks import Greeter, IGreeter


def makeSite(folder):
    # What Zope's "Make site" (manage_site.html) does.
    enableSite(folder, iface=IObjectManagerSite)
    components = PersistentComponents()
    components.__bases__ = (getGlobalSiteManager(),)
    folder.setSiteManager(components)
    return components


for name in ('site1', 'site2', 'plain'):
    manage_addFolder(app, name)
for name in ('site1', 'site2'):
    sm = makeSite(getattr(app, name))
    sm.registerUtility(TaskService(), ITaskService, name='tasks')
    sm.registerUtility(Greeter('Hello from ' + name), IGreeter)
manage_addFolder(app.site1, 'doc', title='Draft')
# A user of the root's user folder, and one of site2's own.
app.acl_users._doAddUser('worker', 'secret', ['Manager'], [])
manage_addUserFolder(app.site2)
app.site2.acl_users._doAddUser('editor', 'secret', ['Manager'], [])
transaction.commit()
"""


def productConfig(**options):
    """A ``<product-config remotetask>`` section."""
    lines = ['<product-config remotetask>']
    lines += ['  %s %s' % (key.replace('_', '-'), value)
              for key, value in options.items()]
    lines.append('</product-config>')
    return '\n'.join(lines)


class ZopeInstance:
    """A Zope instance in ``home`` using the ZEO server ``zeo``."""

    def __init__(self, home, zeo, config=''):
        self.home = str(home)
        self.zeo = zeo
        self.port = testing.freePort()
        self.proc = None
        for sub in ('etc', 'var/log'):
            os.makedirs(os.path.join(self.home, sub), exist_ok=True)
        self.configure(config)
        self.write('etc/site.zcml', SITE_ZCML)

    def write(self, path, text):
        with open(os.path.join(self.home, path), 'w') as f:
            f.write(text)

    def configure(self, config):
        """Write zope.conf with ``config`` (a product-config section)."""
        self.write('etc/zope.conf', ZOPE_CONF.format(
            home=self.home, zeoport=self.zeo.port, productConfig=config))
        self.write('etc/zope.ini', ZOPE_INI.format(home=self.home,
                                                   port=self.port))

    @property
    def conf(self):
        return os.path.join(self.home, 'etc', 'zope.conf')

    @property
    def logPath(self):
        return os.path.join(self.home, 'var', 'log', 'event.log')

    def log(self):
        try:
            with open(self.logPath) as f:
                return f.read()
        except FileNotFoundError:
            return ''

    def run(self, script, **env):
        """Run ``script`` with ``zconsole run`` (no autostart)."""
        path = os.path.join(self.home, 'script.py')
        self.write('script.py', textwrap.dedent(script))
        env.setdefault('REMOTETASK_AUTOSTART', 'off')
        result = subprocess.run(
            [sys.executable, '-m', 'Zope2.utilities.zconsole', 'run',
             self.conf, path], capture_output=True, text=True, timeout=120,
            env=testing.subprocessEnv(**env), cwd=self.home)
        if result.returncode:
            raise AssertionError('zconsole run failed (%s):\n%s%s' % (
                result.returncode, result.stdout, result.stderr))
        return result.stdout

    def start(self, timeout=60):
        out = open(os.path.join(self.home, 'var', 'log', 'runwsgi.out'), 'ab')
        self.proc = subprocess.Popen(
            [sys.executable, '-m', 'Zope2.Startup.serve',
             os.path.join(self.home, 'etc', 'zope.ini')],
            stdout=out, stderr=subprocess.STDOUT, cwd=self.home,
            env=testing.subprocessEnv())
        out.close()
        testing.waitForPort(self.port, timeout, proc=self.proc)
        return self

    def stop(self, timeout=60):
        """SIGTERM, as a process manager stops Zope; the exit code."""
        code = testing.stopProcess(self.proc, timeout)
        self.proc = None
        return code

    def waitForLog(self, text, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return
            if self.proc is not None and self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError('%r not in the event log:\n%s' % (text,
                                                               self.log()))

"""remotetask in Zope 5 and Plone 6 applications.

Include ``remotetask.zope`` in the application's ZCML (Zope: etc/site.zcml;
Plone: ``zcml_package_includes``) and name the services to start in
zope.conf::

    <product-config remotetask>
      autostart site1@tasks, @tasks
      concurrency 2
      user admin
    </product-config>

``autostart`` starts their processors when Zope opens its database and
stops them when it closes it; ``context`` runs each job in its service's
site, with a request and the configured user.  See the README.
"""

"""remotetask: a task queue that lives inside the ZODB."""
import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def read(*parts):
    with open(os.path.join(HERE, *parts), encoding='utf-8') as f:
        return f.read()


# One place: src/remotetask/version.py (also recorded by workers and the
# embedded server, which refuse to share a database across versions).
VERSION = re.search(r"^VERSION = '([^']+)'$",
                    read('src', 'remotetask', 'version.py'), re.M).group(1)


setup(
    name='remotetask',
    version=VERSION,
    description='A task queue service for Python that lives inside the ZODB',
    long_description=read('README.md'),
    long_description_content_type='text/markdown',
    license='ZPL-2.1',
    classifiers=[
        'Framework :: ZODB',
        'Framework :: Zope :: 3',
        'Framework :: Pyramid',
        'Programming Language :: Python :: 3',
        'Programming Language :: Python :: 3.11',
    ],
    package_dir={'': 'src'},
    packages=find_packages('src'),
    include_package_data=True,
    package_data={'remotetask': ['*.txt', '*.zcml', 'zope/*.zcml',
                                 'web/*.txt', 'web/static/*',
                                 'web/templates/*']},
    zip_safe=False,
    python_requires='>=3.9',
    install_requires=[
        'setuptools',
        'ZODB >= 5.8',
        'persistent >= 4.9',
        'BTrees >= 4.11',
        'transaction >= 3.1',
        'zope.interface >= 6.0',
        'zope.component >= 5.1',
        'zope.configuration >= 5.0',
        'zope.schema >= 7.0',
        'zope.event >= 5.0',
        'ZEO >= 5.4',
        'zc.lockfile >= 2.0',   # db.py: a clear error for a locked file
        'zodburi >= 2.6',
        'croniter >= 1.4',
        'click >= 8.0',
        'pyramid >= 2.0',
        'pyramid_tm >= 2.5',
        'pyramid_retry >= 2.1',
        'waitress >= 2.1',
        'defusedxml >= 0.7',    # XML-RPC requests: no entity expansion
        'prometheus_client >= 0.17',
    ],
    extras_require={
        'relstorage': ['RelStorage >= 3.5', 'psycopg2-binary >= 2.9'],
        'test': [
            'pytest >= 7.0',
            'pytest-timeout >= 2.1',
            'zope.testing >= 5.0',
            'zope.testrunner >= 6.0',
            'RelStorage >= 3.5',
            'psycopg2-binary >= 2.9',
            'playwright >= 1.40',
            'WebTest >= 3.0',
            'openapi-spec-validator >= 0.7',
            'openapi-schema-validator >= 0.6',
            'schemathesis >= 4.0',  # test_web_fuzz: the API fuzzed
            # remotetask.zope and remotetask.pyramid, tested with the real
            # frameworks.  Zope 5.x does not start with ZODB >= 6.4 (Zope
            # issue #1291): with it, pip picks Zope 6.
            'Zope >= 5.8',
            'zope.app.appsetup >= 5.0',
            'pyramid_zodbconn >= 0.8',
        ],
        # bench/run.py's peers (not needed by the tests).
        'bench': [
            'huey >= 2.5',
            'rq >= 1.16',
            'celery[redis] >= 5.3',
            'redis >= 5.0',
        ],
    },
    entry_points={
        'console_scripts': [
            'remotetask = remotetask.cli:entry',
        ],
    },
)

"""Run the doctest tutorials (pytest; unittest and zope.testrunner via
load_tests)."""
import doctest
import logging
import os
import unittest

import pytest
import zope.testing.cleanup

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

# The tutorial of the core, workflows and lovely.remotetask's later README
# sections (lovely.txt); processing.txt, tracker.txt and the web
# package's documents are run by their own test modules (they need fixtures).
DOCTESTS = ['README.txt', 'workflows.txt', 'lovely.txt', 'routing.txt']


def setUp(test):
    zope.testing.cleanup.cleanUp()
    # Failing jobs log their tracebacks; keep doctest output clean.
    logging.getLogger('remotetask').disabled = True


def tearDown(test):
    logging.getLogger('remotetask').disabled = False
    zope.testing.cleanup.cleanUp()


def suite(name):
    return doctest.DocFileSuite(os.path.join(HERE, name),
                                module_relative=False, optionflags=FLAGS,
                                setUp=setUp, tearDown=tearDown,
                                encoding='utf-8')


def load_tests(loader, tests, pattern):
    """For unittest and zope.testrunner."""
    tests.addTests(suite(name) for name in DOCTESTS)
    return tests


@pytest.mark.parametrize('name', DOCTESTS)
def test_doctest(name):
    result = unittest.TextTestRunner(verbosity=0).run(suite(name))
    assert result.wasSuccessful(), '\n'.join(
        text for _, text in result.failures + result.errors)

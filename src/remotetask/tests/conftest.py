import pytest
import zope.testing.cleanup


@pytest.fixture(autouse=True)
def cleanRegistry():
    """Every test starts and ends with an empty component registry."""
    zope.testing.cleanup.cleanUp()
    yield
    zope.testing.cleanup.cleanUp()

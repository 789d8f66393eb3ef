import pytest
import zope.testing.cleanup


@pytest.fixture(autouse=True)
def cleanRegistry():
    """Every test starts and ends with an empty component registry."""
    zope.testing.cleanup.cleanUp()
    yield
    zope.testing.cleanup.cleanUp()


@pytest.fixture
def postgres():
    """A throwaway database on the local PostgreSQL (skipped, with the
    reason, when no server answers)."""
    from remotetask import testing
    reason = testing.postgresAvailable()
    if reason:
        pytest.skip(reason)
    with testing.PostgresDatabase() as database:
        yield database


@pytest.fixture(scope='module')
def zeo(tmp_path_factory):
    """A ZEO server (runzeo on a free loopback port) shared by the tests of
    one module; a module may define its own ``zeo`` instead."""
    from remotetask.testing import ZEOServer
    path = tmp_path_factory.mktemp('zeo') / 'Data.fs'
    server = ZEOServer(str(path)).start()
    yield server
    server.stop()

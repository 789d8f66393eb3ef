"""The cold-start bench's no-op task for huey (``huey_consumer
cold_huey.huey``): SqliteHuey in ``$BENCH_COLD_HUEY``."""
import os

from huey import SqliteHuey

from coldmark import mark

huey = SqliteHuey('cold', filename=os.environ['BENCH_COLD_HUEY'])


@huey.task()
def noop(x=None):
    mark()
    return x

"""The peers the bench compares with: a no-op task on huey (SqliteHuey),
RQ and Celery (Redis).  Imported by bench/run.py and by the peers' own
worker processes (``huey_consumer peers.huey``, ``rq worker``,
``celery -A peers worker``), with this directory on sys.path."""
import os

REDIS_URL = os.environ.get('BENCH_REDIS', 'redis://127.0.0.1:6379')
HUEY_FILE = os.environ.get('BENCH_HUEY_FILE', '/tmp/remotetask-bench-huey.db')

# -- huey ---------------------------------------------------------------------
from huey import SqliteHuey  # noqa: E402

huey = SqliteHuey('bench', filename=HUEY_FILE)


@huey.task()
def huey_noop(x=None):
    return x


# -- RQ -----------------------------------------------------------------------

def rq_noop(x=None):
    return x


# -- Celery -------------------------------------------------------------------
from celery import Celery  # noqa: E402

celery = Celery('peers', broker=REDIS_URL + '/14', backend=REDIS_URL + '/15')
celery.conf.update(worker_hijack_root_logger=False, task_acks_late=False,
                   broker_connection_retry_on_startup=True,
                   worker_prefetch_multiplier=16, result_expires=3600)


@celery.task(name='peers.noop')
def celery_noop(x=None):
    return x

"""The cold-start bench's no-op task for Celery (``celery -A cold_celery
worker``), Redis as broker and result backend."""
import os

from celery import Celery

from coldmark import mark

REDIS_URL = os.environ.get('BENCH_REDIS', 'redis://127.0.0.1:6379')

app = Celery('cold_celery', broker=REDIS_URL + '/11',
             backend=REDIS_URL + '/12')
app.conf.update(worker_hijack_root_logger=False,
                broker_connection_retry_on_startup=True,
                worker_prefetch_multiplier=16, result_expires=3600)


@app.task(name='cold.noop')
def noop(x=None):
    mark()
    return x

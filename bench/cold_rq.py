"""The cold-start bench's no-op task for RQ (``rq worker``)."""
from coldmark import mark


def noop(x=None):
    mark()
    return x

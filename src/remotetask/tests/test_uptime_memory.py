"""Months of uptime (issue 17): what a worker keeps in memory per job.

A finished job stays in its connection's cache (up to the cache size);
what a run hangs on it must go with the run.  ``remotetask.memtrace`` dumps
the counts (and tracemalloc snapshots) ``bench/soak.py`` reads.  No test
here measures memory or time: they check what is kept and what is written.
"""
import json
import signal
import threading
import tracemalloc

import pytest

from remotetask import memtrace
from remotetask.tests.test_processor import env, task  # noqa: F401


def cancelling(input):
    """A task during whose run the clock saw a cancel request."""
    event = CANCEL['event']
    event.requested = True
    event.set()
    return input


CANCEL = {}


def claimOne(env, name, input=None):
    jobid = env.add(name, input)
    [job] = env.service.claim(worker='w', lease=60, limit=1)
    env.tm.commit()
    return env.service.jobs[jobid]


@pytest.mark.parametrize('defer', [False, True])
def test_a_run_leaves_no_cancel_event_on_the_cached_job(env, defer):
    task('echo', lambda x: x)
    job = claimOne(env, 'echo', 'a')
    event = threading.Event()
    event.requested = False
    outcome = env.service.run(job, cancelled=event, defer=defer)
    if defer:
        # Between the run and the record: nothing hangs on the job.
        assert '_v_cancelEvent' not in job.__dict__
        assert '_v_begun' not in job.__dict__
        outcome = outcome()
    env.tm.commit()
    assert outcome == 'completed'
    assert not [name for name in job.__dict__ if name.startswith('_v_')]
    assert job._p_changed is False      # still in the cache, up to date


@pytest.mark.parametrize('defer', [False, True])
def test_a_cancel_seen_during_the_run_still_ends_it_cancelled(env, defer):
    task('cancelling', cancelling)
    job = claimOne(env, 'cancelling', 'a')
    event = CANCEL['event'] = threading.Event()
    event.requested = False
    outcome = env.service.run(job, cancelled=event, defer=defer)
    if defer:
        outcome = outcome()
    env.tm.commit()
    assert outcome == 'cancelled'
    assert env.job(job.id).status == 'cancelled'
    assert '_v_cancelEvent' not in job.__dict__


def test_a_failing_run_leaves_no_cancel_event(env):
    def fails(x):
        raise ValueError('no')
    task('fails', fails)
    job = claimOne(env, 'fails')
    event = threading.Event()
    event.requested = False
    assert env.service.run(job, cancelled=event) == 'error'
    env.tm.commit()
    assert '_v_cancelEvent' not in job.__dict__


# -- memtrace ------------------------------------------------------------------

class Kept:
    def __init__(self):
        self.data = bytearray(1000)


@pytest.fixture
def sigusr1():
    previous = signal.getsignal(signal.SIGUSR1)
    yield
    signal.signal(signal.SIGUSR1, previous)
    tracemalloc.stop()


def test_memtrace_is_off_without_the_variable(env, sigusr1):
    previous = signal.getsignal(signal.SIGUSR1)
    assert memtrace.installFromEnvironment(env.db, environ={}) is None
    assert signal.getsignal(signal.SIGUSR1) is previous
    assert not tracemalloc.is_tracing()


@pytest.mark.parametrize('frames', ['x', '-1', ''])
def test_memtrace_refuses_a_bad_frame_count(env, tmp_path, frames, sigusr1):
    environ = {memtrace.ENV: str(tmp_path), memtrace.ENV_FRAMES: frames}
    if frames == '':
        # Empty: the default.
        assert memtrace.installFromEnvironment(env.db, environ).frames == 5
        return
    with pytest.raises(ValueError, match=memtrace.ENV_FRAMES):
        memtrace.installFromEnvironment(env.db, environ)


def test_memtrace_dumps_counts_then_the_growth_on_sigusr1(env, tmp_path,
                                                           sigusr1):
    directory = tmp_path / 'snaps'
    tracer = memtrace.installFromEnvironment(
        env.db, {memtrace.ENV: str(directory), memtrace.ENV_FRAMES: '3'})
    assert not tracemalloc.is_tracing()     # not before the first dump
    signal.raise_signal(signal.SIGUSR1)
    assert tracer.count == 1 and tracemalloc.is_tracing()
    kept = [Kept() for i in range(2000)]    # ~2 MB, still there
    signal.raise_signal(signal.SIGUSR1)
    assert tracer.count == 2
    with open(directory / 'snapshot-2.json') as f:
        info = json.load(f)
    caches = info['connection_caches']
    assert caches['cache_size'] == env.db.getCacheSize()
    assert any(c['opened'] and c['objects'] > 0
               for c in caches['connections'])
    assert info['zeo_cache'] is None        # a FileStorage
    assert info['rss_mb'] > 0 and info['gc_objects'] > 0
    assert dict(info['types'])['Kept'] >= 2000
    lines = memtrace.compare(str(directory / 'snapshot-1'),
                             str(directory / 'snapshot-2'))
    # The top growth is the list above, by this file's line.
    assert lines[0].startswith('traced memory +')
    assert __file__.rstrip('c') in '\n'.join(lines[:4])
    del kept


def test_memtrace_counts_only_with_zero_frames(env, tmp_path, sigusr1):
    tracer = memtrace.installFromEnvironment(
        env.db, {memtrace.ENV: str(tmp_path), memtrace.ENV_FRAMES: '0'})
    tracer.dump()
    tracer.dump()
    assert not tracemalloc.is_tracing()
    assert (tmp_path / 'snapshot-2.json').exists()
    assert not (tmp_path / 'snapshot-2.tracemalloc').exists()
    assert memtrace.compare(str(tmp_path / 'snapshot-1'),
                            str(tmp_path / 'snapshot-2')) == []


# -- a worker's connection caches ------------------------------------------------

def test_the_worker_cache_default_is_the_same_in_both_modules():
    from remotetask import db
    from remotetask.cli import worker
    assert worker.WORKER_CACHE_SIZE == db.WORKER_CACHE_SIZE


def test_the_cache_size_of_a_uri():
    from remotetask import db
    assert db.uriCacheSize('zeo://h:1?connection_cache_size=300') == '300'
    assert db.uriCacheSize('zeo://h:1?cache_size=4MB') is None
    assert db.uriCacheSize('/some/Data.fs') is None
    assert db.uriCacheSize(None) is None


def waitForFile(path, proc, timeout=60.0):
    import os
    import time
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert proc.poll() is None, 'the worker exited'
        assert time.monotonic() < deadline, 'no %s' % path
        time.sleep(0.1)
    time.sleep(0.3)


@pytest.mark.parametrize('options, uriQuery, expected', [
    ((), '', 2000),
    (('--cache-size', '500'), '', 500),
    ((), '?connection_cache_size=300', 300),
    (('--cache-size', '700'), '?connection_cache_size=300', 700),
])
def test_a_worker_bounds_its_connection_caches(tmp_path, options, uriQuery,
                                               expected):
    import subprocess
    from remotetask import testing
    path = tmp_path / 'Data.fs'
    snaps = tmp_path / 'snaps'
    uri = 'file://%s%s' % (path, uriQuery)
    with open(tmp_path / 'worker.log', 'wb') as log:
        proc = subprocess.Popen(
            testing.remotetaskCommand('worker', '--db', uri, '--concurrency',
                                      '2', '--pack-interval', '0', *options),
            env=testing.subprocessEnv(**{memtrace.ENV: str(snaps),
                                         memtrace.ENV_FRAMES: '0'}),
            stdout=log, stderr=subprocess.STDOUT)
    try:
        waitForFile(str(path) + '.zeo', proc)    # it serves the file: ready
        proc.send_signal(signal.SIGUSR1)
        waitForFile(str(snaps / 'snapshot-1.json'), proc)
        with open(snaps / 'snapshot-1.json') as f:
            caches = json.load(f)['connection_caches']
        assert caches['cache_size'] == expected
        # Its threads' connections are open, each under that bound.
        assert len(caches['connections']) >= 3
        assert all(c['non_ghosts'] <= expected
                   for c in caches['connections'])
    finally:
        testing.stopProcess(proc)


def test_a_bad_cache_size_is_a_usage_error(tmp_path):
    from click.testing import CliRunner
    from remotetask.cli import main
    result = CliRunner().invoke(main, ['worker', '--db', str(
        tmp_path / 'Data.fs'), '--cache-size', '0'])
    assert result.exit_code == 2
    assert '--cache-size' in result.output
    result = CliRunner().invoke(main, ['worker', '--db', 'file://%s?'
                                       'connection_cache_size=many' % (
                                           tmp_path / 'Data.fs')])
    assert result.exit_code == 2
    assert 'connection_cache_size' in result.output

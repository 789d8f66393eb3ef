"""The clock of a processor: its housekeeping thread.

It has a connection and a transaction manager of its own and, every
``tick`` seconds (at most half a second):

- hands back the jobs claimed ahead by a thread busy with a long job
  (``Processor._releaseHeld``);
- renews the leases of the jobs the processor's threads claimed (about every
  third of the lease), writing only each job's small lease object, so that
  renewals never conflict with the jobs' completion; a job found no longer
  owned has its ``cancelled`` flag set;
- tells the tasks of jobs cancelled while running (``cancelled`` true);
- enforces time limits: a job past its limit has its ``cancelled`` flag set
  and is ended through ``service.reap()``;
- calls ``service.maintain()`` every ``maintenance_interval`` seconds, then
  removes expired jobs (``remotetask.retention``) in small transactions;
  while it is behind (a step found a full batch), at every tick too, within
  a share of the clock's time (``_expire``; docs/uptime.md, "Retention's
  pace"); only the live processor of smallest registry key expires;
- updates the processor's entry in the worker registry every ``heartbeat``
  seconds (``remotetask.registry``), removing expired entries of others;
- wakes idle worker threads when a job is due (delayed and cron jobs start
  within a tick of their time, whatever the poll interval); on RelStorage
  with a LISTEN connection, it looks only when notified, when the earliest
  waiting job's time comes, or every ``pgnotify.QUIET_POLL`` seconds.
"""
import logging
import time

import transaction
from transaction.interfaces import TransientError

from remotetask import pgnotify, quiet, registry, retention, routing
from remotetask.limits import cancelRequested
from remotetask.threads import (
    abort, close, errorText, pause, storageErrors)

log = logging.getLogger('remotetask.worker')

#: Retention: the share of time that expiry steps may take (this
#: thread's CPU time: the time since the last expiry run times this, at
#: most this share of the maintenance interval), and at most this many
#: steps per run.  Each
#: step is one transaction of ``Clock._expireBatch`` removals at most,
#: between ``retention.MIN_BATCH`` and ``retention.MAX_BATCH``: larger
#: after each step that committed with more to do, halved after a
#: conflict.
EXPIRE_SHARE = 0.25
EXPIRE_STEPS = 50
#: ... and at most this many seconds of wall time per run.
EXPIRE_WALL = 2.0


class Clock:
    """The clock thread's work; a base class of ``Processor``, whose state
    it uses: ``_active`` (the claimed jobs, under ``_lock``), ``lease``,
    ``tick``, ``maintenance_interval``, the ``_clockStop`` event,
    ``_service()``, ``_count()`` and ``wake()``."""

    #: The pgnotify.Listener of the processor (None: no LISTEN), and what
    #: ``_checkDue`` saw last: the listener's ``heard``, and when to look
    #: again at the latest.
    _listener = None
    _dueHeard = None
    _dueNext = 0.0

    #: Expiry's state: the cursors per status, the step's size, whether
    #: the last run stopped with more to do, when it ended (monotonic),
    #: and whether this processor is the one that expires.
    _expiryCursors = None
    _expireBatch = retention.BATCH
    _expireBehind = False
    _expireEnded = None
    _expiring = True

    def _clockLoop(self):
        # Explicit: no RelStorage poll (a PostgreSQL transaction left open)
        # after each of its transactions; each one begins its own.
        tm = transaction.TransactionManager(explicit=True)
        conn = None
        nextMaintenance = 0.0
        failures = 0
        try:
            while not self._clockStop.is_set():
                try:
                    if conn is None:
                        conn = self.db.open(tm)
                    now = time.time()
                    if quiet.isQuiet(self):
                        # Idle with a LISTEN connection: one look now and
                        # then (remotetask.quiet).
                        nextMaintenance = quiet.look(self, tm, conn, now,
                                                     nextMaintenance)
                        failures = 0
                        self._clockStop.wait(self.tick)
                        continue
                    self._renew(tm, conn, now)
                    self._checkCancels(tm, conn)
                    self._releaseHeld()
                    self._beat(tm, conn, now)
                    self._enforceLimits(tm, conn, now)
                    if now >= nextMaintenance:
                        nextMaintenance = now + self.maintenance_interval
                        self._maintain(tm, conn, now)
                    elif self._expireBehind:
                        self._expire(tm, conn, now)
                    if self._idle and not self._stopping.is_set():
                        self._checkDue(tm, conn, now)
                    failures = 0
                except storageErrors() as e:
                    abort(tm)
                    self._count(storage_errors=1)
                    log.warning('clock: database unavailable (%s)',
                                errorText(e))
                    failures += 1
                    pause(failures, self._clockStop)
                    continue
                except Exception:
                    abort(tm)
                    log.exception('clock: housekeeping failed; going on')
                self._clockStop.wait(self.tick)
        finally:
            abort(tm)
            if conn is not None:
                close(conn)

    def _renew(self, tm, conn, now):
        with self._lock:
            due = [i for i in self._active.values() if not i.lost
                   and now - i.renewed >= self.lease / 3.0]
        if not due:
            return
        lost = []
        try:
            for attempt in tm.attempts(3):
                with attempt:
                    lost = []
                    service = self._service(conn)
                    for item in due:
                        job = item.job(service)
                        if job is None:
                            lost.append(item)
                        elif job._lease is not None:
                            # Writes the small lease object only.
                            job._lease.expires = now + self.lease
        except storageErrors():
            raise
        except TransientError:
            log.warning('clock: renewing leases conflicted; next tick')
            return
        for item in due:
            item.renewed = now
        for item in lost:
            item.lost = True
            item.cancelled.set()

    def _beat(self, tm, conn, now):
        """The registry heartbeat: writes only this processor's entry (and,
        when some expired, the registry's BTree)."""
        registration = self.registration
        if not registration.due(now):
            return
        try:
            for attempt in tm.attempts(3):
                with attempt:
                    service = self._service(conn)
                    registration.beat(service, now)
                    dead = (registry.prune(service, now)
                            if registration.pruneDue(now) else [])
        except storageErrors():
            raise
        except TransientError:
            log.warning('clock: the registry heartbeat conflicted; next tick')
            return
        if dead:
            log.warning('workers %s expired (no heartbeat for %d intervals)',
                        ', '.join(dead), registry.MISSED)

    def _checkCancels(self, tm, conn):
        """Tell the tasks whose jobs were cancelled while running (a flag
        on the job's progress object, see ``remotetask.limits``)."""
        with self._lock:
            active = [i for i in self._active.values()
                      if not i.lost and not i.cancelled.is_set()]
        if not active:
            return
        tm.begin()
        try:
            service = self._service(conn)
            asked = []
            for item in active:
                job = item.job(service)
                if job is not None and cancelRequested(job):
                    asked.append(item)
        finally:
            tm.abort()
        for item in asked:
            log.warning('job %s (%s): cancel requested; its task is told '
                        '(cancelled is true)', item.jobid, item.task)
            item.cancelled.requested = True
            item.cancelled.set()

    def _enforceLimits(self, tm, conn, now):
        with self._lock:
            over = [i for i in self._active.values() if not i.timedOut
                    and i.deadline is not None and now > i.deadline]
        if not over:
            return
        # End the jobs first, then tell the tasks: a task that stops when
        # cancelled must not get to record an outcome of its own.
        if self._reap(tm, conn, now):
            for item in over:
                log.warning('job %s (%s) is over its time limit: ended, and '
                            'its task cancelled', item.jobid, item.task)
                item.timedOut = True
                item.cancelled.set()

    def _maintain(self, tm, conn, now):
        self._reap(tm, conn, now, maintain=True)
        self._expiring = self._isExpirer(tm, conn, now)
        if self._expiring:
            self._expire(tm, conn, now)
        else:
            self._expireBehind = False

    def _isExpirer(self, tm, conn, now):
        """True if this processor removes expired jobs (``registry.first``:
        one processor of a service at a time)."""
        registration = getattr(self, 'registration', None)
        if registration is None:
            return True
        tm.begin()
        try:
            return registry.first(self._service(conn), registration.key,
                                  now)
        finally:
            tm.abort()

    def _expire(self, tm, conn, now):
        """Remove expired jobs (``remotetask.retention``) in steps of a
        transaction each, back to back while a step finds a full batch, for
        at most ``EXPIRE_SHARE`` of the time since the last run (of the
        maintenance interval at most) and ``EXPIRE_STEPS`` steps.  A step
        that conflicts is given up (its removals are done by a later one)
        and the next ones are smaller; steps that commit with more to do
        grow.  ``_expireBehind`` tells the clock loop to come back at the
        next tick rather than at the next maintenance."""
        # The share is of this thread's CPU time (the worker threads hold
        # the GIL most of the time when busy: a share of wall time would
        # be a fraction of that), within EXPIRE_WALL seconds of wall time
        # (lease renewals wait for the run).
        began = time.monotonic()
        interval = self.maintenance_interval
        since = interval if self._expireEnded is None \
            else min(interval, began - self._expireEnded)
        cpuUntil = time.thread_time() + EXPIRE_SHARE * since
        until = began + EXPIRE_WALL
        cursors = self._expiryCursors or {}
        more = False
        try:
            for step in range(EXPIRE_STEPS):
                limit = self._expireBatch
                try:
                    with tm:
                        removed, after, more = retention.expire(
                            self._service(conn), now, cursors, limit=limit,
                            scan=limit * retention.SCAN_FACTOR)
                except storageErrors():
                    raise
                except TransientError:
                    abort(tm)
                    self._count(conflicts=1)
                    self._expireBatch = max(retention.MIN_BATCH, limit // 2)
                    log.debug('clock: a step removing expired jobs '
                              'conflicted; next ones of %d',
                              self._expireBatch)
                    more = True
                else:
                    cursors = self._expiryCursors = after
                    if removed:
                        self._count(expired=len(removed))
                    if more and len(removed) >= limit:
                        self._expireBatch = min(retention.MAX_BATCH,
                                                limit + limit // 2)
                if not more or time.thread_time() >= cpuUntil \
                        or time.monotonic() >= until \
                        or self._clockStop.is_set():
                    break
        finally:
            self._expireBehind = more
            self._expireEnded = time.monotonic()

    def _reap(self, tm, conn, now, maintain=False):
        try:
            for attempt in tm.attempts(3):
                with attempt:
                    service = self._service(conn)
                    reaped = (service.maintain(now) if maintain
                              else service.reap(now))
        except storageErrors():
            raise
        except TransientError:
            log.warning('clock: %s conflicted; next time',
                        'maintenance' if maintain else 'reaping')
            return False
        self._count(maintenance_runs=int(maintain), reaped=len(reaped))
        if reaped:
            log.warning('reaped jobs %s (lease expired or time limit)',
                        ', '.join(map(str, reaped)))
            self.wake()
        return True

    def _checkDue(self, tm, conn, now):
        listener = self._listener
        quiet = pgnotify.quiet(listener)
        if quiet:
            # RelStorage on PostgreSQL (remotetask.pgnotify): no query
            # unless a NOTIFY came, a waiting job's time came, or
            # QUIET_POLL went by.  (``heard`` is read before the
            # transaction starts: a NOTIFY during the look is looked at
            # again at the next tick.)
            heard = listener.heard
            if heard == self._dueHeard and now < self._dueNext:
                return
        tm.begin()
        try:
            # No ``now``: the real clock (an explicit one is lovely's fake
            # clock, which moves cron jobs added without one).
            service = self._service(conn)
            due = service.hasJobsWaiting()
            first = routing.firstEta(service) if quiet else None
        finally:
            tm.abort()
        if quiet:
            self._dueHeard = heard
            self._dueNext = now + pgnotify.QUIET_POLL
            if first is not None:
                self._dueNext = min(self._dueNext, first)
        if due:
            self.wake()

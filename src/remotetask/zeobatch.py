"""A ZEO client's stores sent to the server in one go, at the vote.

``ZEO.ClientStorage.store`` hands every object a transaction stores to
the client's I/O thread as a message of its own: a
``call_soon_threadsafe`` (a write to the event loop's wake-up pipe), a
turn of the loop and a ``send`` on the socket per object.  A worker's
group commit stores about 170 objects (50 no-op jobs and their
bookkeeping): profiled, that hand-over was about a fifth of a ZEO
worker's CPU per job (bench/RESULTS.md, 2026-12-02 ``noopzeo``).

``install(storage)`` keeps the ``storea`` messages of the transaction in
a list and hands them over together before the next message that is not
a store, the vote at the latest: one wake-up of the I/O thread, which
writes them with one ``writelines`` (one ``sendmsg``) when the socket has
nothing buffered, or one after the other through ZEO's protocol (which
then queues them behind what is buffered) if it has.  The server sees the
same messages in the same order; only when they leave changes.

It wraps the storage instance's ``_async``, ``_call`` and ``_async_iter``
(the three ways ``ClientStorage`` talks to the server, besides loads,
which do not depend on a transaction's stores) and its ``tpc_finish``,
which goes to the server directly: stores still pending then (ZEO's vote
re-stores resolved conflicts and, after its ninth round, finishes without
voting again) leave before it, as they would have without batching.  A
ZEO whose client does not look as expected (another version's internals)
is left alone.
"""
import logging
import struct
import threading

log = logging.getLogger(__name__)

_size = struct.Struct('>I').pack


def install(storage):
    """Batch the stores of ``storage`` (a ``ZEO.ClientStorage``); True if
    done, False if its internals are not the ones this module knows."""
    server = getattr(storage, '_server', None)
    if getattr(storage, '_remotetask_batched', False):
        return True
    if server is None or not all(
            callable(getattr(storage, name, None))
            for name in ('_async', '_call', '_async_iter')) \
            or getattr(server, 'loop', None) is None \
            or getattr(server, 'client', None) is None:
        log.debug('zeobatch: %r not batched (unknown ZEO internals)',
                  storage)
        return False
    Batcher(storage, server).install()
    return True


class Batcher:
    """The wrapped ``_async``, ``_call`` and ``_async_iter`` of one
    ``ClientStorage``."""

    def __init__(self, storage, server):
        self.storage = storage
        self.server = server
        self.call0 = storage._call
        self.async0 = storage._async
        self.iter0 = storage._async_iter
        self.finish0 = storage.tpc_finish
        self.pending = []
        # Held while pending stores are handed to the I/O thread, so that
        # whatever a thread sends after its stores leaves after them.
        self.lock = threading.Lock()

    def install(self):
        storage = self.storage
        storage._async = self.async_
        storage._call = self.call
        storage._async_iter = self.async_iter
        storage.tpc_finish = self.tpc_finish
        storage._remotetask_batched = True

    def async_(self, method, *args):
        if method == 'storea':
            with self.lock:
                self.pending.append(args)
            return None
        with self.lock:
            self._flush()
            return self.async0(method, *args)

    def call(self, method, *args, **kw):
        with self.lock:
            self._flush()
        return self.call0(method, *args, **kw)

    def async_iter(self, it):
        with self.lock:
            self._flush()
            return self.iter0(it)

    def tpc_finish(self, *args, **kw):
        with self.lock:
            self._flush()
        return self.finish0(*args, **kw)

    def _flush(self):
        """Hand the pending stores to the I/O thread (``lock`` held)."""
        if not self.pending:
            return
        messages = self.pending
        self.pending = []
        client = self.server.client
        if not client.operational:
            from ZEO.Exceptions import ClientDisconnected
            raise ClientDisconnected
        self.server.loop.call_soon_threadsafe(self._send, client, messages)

    @staticmethod
    def _send(client, messages):
        """Write ``messages`` (``storea`` arguments) to the server (in the
        I/O thread)."""
        protocol = client.protocol
        smp = getattr(protocol, 'sm_protocol', None)
        transport = getattr(smp, 'transport', None)
        encode = getattr(protocol, 'encode', None)
        if transport is not None and encode is not None \
                and not transport.is_closing() \
                and transport.get_write_buffer_size() == 0:
            # Nothing buffered: the sized-message protocol is not paused
            # and holds nothing back, so these frames go next, in one
            # system call (its framing: a 4-byte size, then the message).
            frames = []
            for args in messages:
                message = encode(0, True, 'storea', args)
                frames.append(_size(len(message)))
                frames.append(message)
            transport.writelines(frames)
            return
        for args in messages:
            protocol.call_async('storea', args)

"""The ``asyncio`` transport faces of ferroloop's Rust transports.

A Rust pyclass cannot derive from ``asyncio.Transport`` (``BaseTransport`` has
``__slots__``, so the two instance layouts conflict), yet code checks
``isinstance(transport, asyncio.Transport)`` and asyncio's sendfile fallback requires
``transports._FlowControlMixin``. So each Rust transport (the *core*) gets a face: an
instance of a class here, deriving from both, whose instance dict holds the core's bound
methods (``core._bind_face`` puts them there). Calling ``transport.write(data)`` therefore
finds the Rust method in the instance dict and calls it directly: no Python frame of ours
runs per call; only the face's creation (once per connection) and the rare members
defined below are Python.

Invariants: a face is created only by the ``wrap_*`` functions and bound to
exactly one core; the core hands the face (never itself) to protocols, servers and
exception handlers; the core keeps the face alive while it is registered with the loop,
as asyncio's selector keeps its transports.
"""

from __future__ import annotations

import warnings
from asyncio import constants, transports

from ._ferroloop import DatagramTransport as DatagramCore
from ._ferroloop import ReadPipeTransport as ReadPipeCore
from ._ferroloop import StreamTransport as StreamCore
from ._ferroloop import WritePipeTransport as WritePipeCore


class _Face:
    """What every face adds to its core's methods (none of it is on a hot path)."""

    # Neither asyncio's __init__ runs: the core holds the state _FlowControlMixin keeps in
    # its slots, and the methods that read those slots are shadowed by the core's.

    @property
    def _protocol_paused(self):
        return self._core._protocol_paused

    def __repr__(self):
        return repr(self._core)

    # The attribute asyncio's class of this kind keeps its socket or pipe in; code that
    # sets it to None (as asyncio's tests do) declares the resource dealt with.
    _resource_attr = "_sock"

    def __del__(self, _warn=warnings.warn):
        # Reached only when the core is no longer registered with the loop (a registered
        # core keeps its face alive): nothing is left to flush, as in asyncio.
        core = self.__dict__.get("_core")
        resource = self.__dict__.get(self._resource_attr)
        if core is not None and resource is not None and not core.is_closing():
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            resource.close()


class SocketTransport(_Face, transports._FlowControlMixin, transports.Transport):
    """A TCP or Unix stream transport (the Rust ``StreamTransport`` core does the work)."""

    _start_tls_compatible = True  # start_tls swaps in asyncio's SSLProtocol (see _tls)
    _sendfile_compatible = constants._SendfileMode.TRY_NATIVE  # os.sendfile, zero-copy


class DatagramTransport(_Face, transports._FlowControlMixin, transports.DatagramTransport):
    """A UDP or Unix datagram transport (the Rust ``DatagramTransport`` core does the work)."""


class ReadPipeTransport(_Face, transports.ReadTransport):
    """The read end of a pipe (the Rust ``ReadPipeTransport`` core does the work)."""

    _resource_attr = "_pipe"


class WritePipeTransport(_Face, transports._FlowControlMixin, transports.WriteTransport):
    """The write end of a pipe (the Rust ``WritePipeTransport`` core does the work)."""

    _resource_attr = "_pipe"


def _wrap(face_class, core):
    face = face_class.__new__(face_class)
    core._bind_face(face)
    return face


def wrap_stream(core: StreamCore) -> SocketTransport:
    """The face of a new stream transport core."""
    return _wrap(SocketTransport, core)


def wrap_datagram(core: DatagramCore) -> DatagramTransport:
    """The face of a new datagram transport core."""
    return _wrap(DatagramTransport, core)


def wrap_read_pipe(core: ReadPipeCore) -> ReadPipeTransport:
    """The face of a new read pipe transport core."""
    face = _wrap(ReadPipeTransport, core)
    face._pipe = core._sock
    return face


def wrap_write_pipe(core: WritePipeCore) -> WritePipeTransport:
    """The face of a new write pipe transport core."""
    face = _wrap(WritePipeTransport, core)
    face._pipe = core._sock
    return face

"""Event packets over ZeroMQ PUB/SUB: a publisher, a draining subscriber, CURVE security.

One packet is one two-frame multipart message (:mod:`smastream.stream.wire`): a 56-byte
header and the raw events, sent zero-copy and decoded with a read-only ``np.frombuffer``.
Nothing is ever pickled.

Publisher side (:class:`Publisher`): an XPUB socket (a PUB that also reports
subscriptions) with a bounded send high-water mark per subscriber. When a subscriber's
queue is full, ZeroMQ silently drops the *newest* packets for that subscriber; the
publisher cannot see those drops — the subscriber sees them as gaps in the sequence
numbers (``lost``). ``nodrop=True`` makes ``send`` wait (up to ``send_timeout_ms``)
instead, for lossless replay to a consumer that keeps up on average.

Subscriber side (:class:`Subscriber`): a background thread drains the SUB socket
continuously into a bounded buffer that drops the *oldest* packet when full (counted in
``dropped_oldest``), so a slow consumer always gets the freshest data instead of the stale
data a full ZeroMQ queue would leave it. (``ZMQ_CONFLATE`` is never used: with multipart
messages it aborts the receiver.) Every message is checked; malformed ones are counted by
reason and dropped, never fatal.

Slow joiners: a PUB/SUB subscription takes a moment to reach the publisher, and packets
sent before it arrives are lost for that subscriber. :meth:`Publisher.wait_for_subscribers`
reads the subscription messages that the XPUB socket receives, so a sender can wait until
its consumers are really listening — a handshake by message, no sleeps.

Security: endpoints default to loopback. Binding anything else (``tcp://0.0.0.0:5555``,
``tcp://*:5555``, a LAN address or host name) is refused unless ``allow_remote=True``.
With ``curve_server_secret`` the publisher encrypts with CURVE and authenticates clients
through a ZAP handler (:class:`zmq.auth.thread.ThreadAuthenticator`): any client that knows
the server's public key, or only those whose public keys are in ``curve_clients_dir``.
A client without the server key gets nothing. ``smastream keys DIR`` makes key pairs.
"""

from __future__ import annotations

import collections
import ipaddress
import itertools
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

import numpy as np
import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from smastream.errors import SmastreamError
from smastream.stream.events import EVENT_DTYPE, Events, as_events
from smastream.stream.events import sensor_size as resolve_sensor_size
from smastream.stream.wire import (
    HEADER_SIZE,
    MalformedPacket,
    PacketFlags,
    PacketHeader,
    decode_packet,
    encode_packet,
    events_header,
)

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"
"""Where a publisher binds and a subscriber connects unless told otherwise."""

DEFAULT_HWM = 256
"""Publisher send high-water mark, in packets per subscriber (~0.25-1 s of a camera)."""

DEFAULT_BUFFER_PACKETS = 64
"""Subscriber's drop-oldest buffer, in packets."""

TRANSPORTS = ("tcp", "ipc", "inproc")
"""ZeroMQ transports accepted in endpoints."""

_LOOPBACK_NAMES = ("localhost",)


class TransportError(SmastreamError):
    """A socket could not be set up (address in use, bad key file...); one-line message."""


class EndpointError(TransportError, ValueError):
    """An endpoint is malformed, uses an unsupported transport, or is remote unasked."""


# ----------------------------------------------------------------------------- endpoints


def parse_endpoint(endpoint: str) -> tuple[str, str, str | None]:
    """Split a ZeroMQ endpoint into ``(transport, host_or_path, port)``.

    ``tcp://127.0.0.1:5555`` -> ``("tcp", "127.0.0.1", "5555")``,
    ``tcp://[::1]:*`` -> ``("tcp", "::1", "*")``, ``ipc:///tmp/s`` -> ``("ipc", "/tmp/s", None)``.

    Raises:
        EndpointError: no ``://``, a transport other than :data:`TRANSPORTS`, a tcp
            address without ``host:port``, or a port that is not 0..65535 or ``*``
            (ZeroMQ would bind ``99999`` modulo 65536).
    """
    transport, sep, address = endpoint.partition("://")
    if not sep or not address:
        raise EndpointError(
            f"endpoint {endpoint!r} is not TRANSPORT://ADDRESS, e.g. {DEFAULT_ENDPOINT} "
            "or ipc:///tmp/smastream.ipc"
        )
    if transport not in TRANSPORTS:
        raise EndpointError(
            f"transport {transport!r} in {endpoint!r} is not supported: use one of {TRANSPORTS}"
        )
    if transport != "tcp":
        return transport, address, None
    host, colon, port = address.rpartition(":")
    if not colon or not host or not port:
        raise EndpointError(f"tcp endpoint {endpoint!r} needs HOST:PORT, e.g. {DEFAULT_ENDPOINT}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if port != "*" and not (port.isascii() and port.isdigit() and int(port) <= 65535):
        raise EndpointError(
            f"port {port!r} in {endpoint!r} is not a port number 0..65535 or * "
            f"(0 and * pick a free one), e.g. {DEFAULT_ENDPOINT}"
        )
    return transport, host, port


def is_loopback(endpoint: str) -> bool:
    """True when only this machine can reach ``endpoint`` (ipc, inproc, a loopback host).

    ``*``, ``0.0.0.0``, interface names and host names other than ``localhost`` count as
    remote: they may listen on a network interface.
    """
    transport, host, _ = parse_endpoint(endpoint)
    if transport != "tcp":
        return True
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind_endpoint(endpoint: str, *, allow_remote: bool = False) -> str:
    """Return ``endpoint`` if binding it is allowed, else raise.

    Raises:
        EndpointError: malformed, or not loopback while ``allow_remote`` is False.
    """
    if not is_loopback(endpoint) and not allow_remote:
        raise EndpointError(
            f"refusing to bind {endpoint!r}: it is not a loopback address, so other machines "
            "could connect; pass allow_remote=True (--allow-remote) to publish beyond this "
            "machine, preferably with CURVE keys (smastream keys)"
        )
    return endpoint


# ------------------------------------------------------------------------------ CURVE keys


def load_public_key(key: str | bytes | Path) -> bytes:
    """A CURVE public key: a Z85 string/bytes (40 chars) or a certificate file's path.

    Raises:
        TransportError: the file is missing or has no public key.
    """
    if isinstance(key, bytes):
        if len(key) == 40:
            return key
        key = key.decode()
    if isinstance(key, str) and len(key) == 40 and not Path(key).exists():
        return key.encode("ascii")
    path = Path(key)
    try:
        public, _ = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise TransportError(f"cannot read a CURVE public key from {path}: {exc}") from None
    return public


def load_secret_key(path: str | Path) -> tuple[bytes, bytes]:
    """``(public, secret)`` from a ``*.key_secret`` certificate (``smastream keys``).

    Raises:
        TransportError: missing file or no secret key in it.
    """
    try:
        public, secret = zmq.auth.load_certificate(Path(path))
    except (OSError, ValueError) as exc:
        raise TransportError(f"cannot read a CURVE secret key from {path}: {exc}") from None
    if not secret:
        raise TransportError(
            f"{path} holds no secret key: pass the .key_secret file, not the public .key"
        )
    return public, secret


# ------------------------------------------------------------------------------ publisher


@dataclass(frozen=True)
class PublisherStats:
    """What a :class:`Publisher` has sent.

    Drops by ZeroMQ at a full high-water mark are invisible here: subscribers count them
    as sequence gaps (``SubscriberStats.lost``).
    """

    packets: int = 0
    events: int = 0
    bytes: int = 0
    send_timeouts: int = 0


class Publisher:
    """Publishes event packets on an XPUB socket; one thread uses it.

    Args:
        endpoint: Where to bind, e.g. :data:`DEFAULT_ENDPOINT` (``tcp://127.0.0.1:5555``),
            ``tcp://127.0.0.1:*`` (an ephemeral port, see :attr:`endpoint`),
            ``ipc:///tmp/cam.ipc``.
        sensor_size: ``(width, height)`` or a name (``davis346``) written into each header.
        stream_id: This source's id in the headers (u4).
        hwm: Send high-water mark in packets per subscriber (bounded queue).
        allow_remote: Allow binding a non-loopback address.
        curve_server_secret: The server's ``.key_secret`` file; enables CURVE.
        curve_clients_dir: With CURVE, a folder of allowed clients' public ``.key`` files;
            ``None`` accepts any client that knows the server's public key.
        nodrop: Wait (up to ``send_timeout_ms``) when a subscriber's queue is full instead
            of dropping; for lossless replay.
        send_timeout_ms: Longest wait in ``send`` with ``nodrop``; then ``TimeoutError``.
        linger_ms: How long ``close`` keeps trying to deliver queued packets.

    Raises:
        EndpointError: bad endpoint, or remote without ``allow_remote``.
        TransportError: cannot bind, or unreadable keys.
    """

    def __init__(
        self,
        endpoint: str,
        sensor_size: tuple[int, int] | str,
        *,
        stream_id: int = 0,
        hwm: int = DEFAULT_HWM,
        allow_remote: bool = False,
        curve_server_secret: str | Path | None = None,
        curve_clients_dir: str | Path | None = None,
        nodrop: bool = False,
        send_timeout_ms: int = 1000,
        linger_ms: int = 500,
    ) -> None:
        check_bind_endpoint(endpoint, allow_remote=allow_remote)
        if hwm < 0:
            raise ValueError(f"hwm must be >= 0 (0 = unbounded), got {hwm}")
        if not 0 <= stream_id <= 0xFFFFFFFF:
            raise ValueError(f"stream_id {stream_id} does not fit u4 (0..4294967295)")
        if curve_clients_dir is not None and curve_server_secret is None:
            raise ValueError("curve_clients_dir needs curve_server_secret (the server key)")
        self.sensor_size = resolve_sensor_size(sensor_size)
        self.stream_id = int(stream_id)
        self.linger_ms = int(linger_ms)
        self._send_timeout_ms = int(send_timeout_ms)
        self._seq = 0
        self._t_last_us = 0
        self._packets = self._events = self._bytes = self._timeouts = 0
        self._subscribers = 0
        self._closed = False
        self._ctx = zmq.Context(io_threads=1)
        self._auth: ThreadAuthenticator | None = None
        self.socket: zmq.Socket[Any] = self._ctx.socket(zmq.XPUB)
        """The XPUB socket (exposed for monitoring; do not send on it directly)."""
        try:
            sock = self.socket
            sock.setsockopt(zmq.LINGER, self.linger_ms)
            sock.setsockopt(zmq.SNDHWM, int(hwm))
            sock.setsockopt(zmq.XPUB_VERBOSE, 1)  # every subscription, not only the first
            sock.setsockopt(zmq.XPUB_VERBOSER, 1)  # and every unsubscription
            if nodrop:
                sock.setsockopt(zmq.XPUB_NODROP, 1)
                sock.setsockopt(zmq.SNDTIMEO, int(send_timeout_ms))
            transport, host, _ = parse_endpoint(endpoint)
            if transport == "tcp" and ":" in host:
                sock.setsockopt(zmq.IPV6, 1)
            if curve_server_secret is not None:
                public, secret = load_secret_key(curve_server_secret)
                self._auth = ThreadAuthenticator(self._ctx)
                self._auth.start()
                if curve_clients_dir is None:
                    self._auth.configure_curve(domain="*", location=zmq.auth.CURVE_ALLOW_ANY)
                else:
                    clients = Path(curve_clients_dir)
                    if not clients.is_dir():
                        raise TransportError(f"curve_clients_dir {clients} is not a folder")
                    self._auth.configure_curve(domain="*", location=str(clients))
                sock.curve_secretkey = secret
                sock.curve_publickey = public
                sock.curve_server = True
            try:
                sock.bind(endpoint)
            except zmq.ZMQError as exc:
                raise TransportError(f"cannot bind {endpoint}: {exc}") from None
            self.endpoint: str = sock.getsockopt_string(zmq.LAST_ENDPOINT)
            """The bound endpoint with the real port (``tcp://127.0.0.1:*`` resolved)."""
        except BaseException:
            self._teardown(0)
            raise

    @property
    def seq(self) -> int:
        """Sequence number the next packet will carry."""
        return self._seq

    @property
    def stats(self) -> PublisherStats:
        return PublisherStats(self._packets, self._events, self._bytes, self._timeouts)

    @property
    def subscribers(self) -> int:
        """Subscriptions currently known (reads pending XPUB messages, never blocks)."""
        self._read_subscriptions(0)
        return self._subscribers

    def _read_subscriptions(self, timeout_ms: int) -> None:
        self._check_open()
        if not self.socket.poll(timeout_ms, zmq.POLLIN):
            return
        while True:
            try:
                msg = self.socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if msg[:1] == b"\x01":
                self._subscribers += 1
            elif msg[:1] == b"\x00":
                self._subscribers = max(0, self._subscribers - 1)

    def wait_for_subscribers(self, n: int = 1, timeout_s: float = 10.0) -> bool:
        """Wait until ``n`` subscriptions have reached this publisher (the slow-joiner fix).

        Packets sent after this returns True reach those subscribers. Returns False on
        timeout.
        """
        deadline = time.monotonic() + timeout_s
        while self.subscribers < n:
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0:
                return False
            self._read_subscriptions(left_ms)
        return True

    def send(
        self,
        events: Events,
        *,
        flags: PacketFlags = PacketFlags.NONE,
        t_range_us: tuple[int, int] | None = None,
    ) -> PacketHeader:
        """Publish one packet of sorted events (zero-copy: do not modify them afterwards).

        Args:
            events: ``[N]`` events; :data:`EVENT_DTYPE` is sent as is, other structured
                event arrays are converted (copied) first.
            flags: :class:`PacketFlags`, e.g. ``DISCONTINUITY`` after a seek.
            t_range_us: The packet's time span ``(t_first, t_last)`` when it is not just
                its first and last event (fixed-duration packets); an empty packet without
                it spans the previous packet's end.

        Returns:
            The header sent.

        Raises:
            TimeoutError: with ``nodrop``, a subscriber's queue stayed full for
                ``send_timeout_ms`` (the packet was not sent; counted).
        """
        self._check_open()
        ev = (
            events
            if isinstance(events, np.ndarray) and events.dtype == EVENT_DTYPE
            else as_events(np.asarray(events))
        )
        if t_range_us is None and len(ev) == 0:
            t_range_us = (self._t_last_us, self._t_last_us)
        header = events_header(
            ev,
            stream_id=self.stream_id,
            seq=self._seq,
            sensor_size=self.sensor_size,
            flags=flags,
            send_time_ns=time.time_ns(),
            t_range_us=t_range_us,
        )
        frames = encode_packet(header, ev)
        try:
            self.socket.send_multipart(frames, copy=False)
        except zmq.Again:
            self._timeouts += 1
            raise TimeoutError(
                f"a subscriber's queue stayed full for {self._send_timeout_ms} ms "
                f"(packet seq {self._seq} not sent)"
            ) from None
        self._seq += 1
        self._t_last_us = header.t_last_us
        self._packets += 1
        self._events += header.n_events
        self._bytes += HEADER_SIZE + header.payload_size
        return header

    def send_end(self) -> PacketHeader:
        """Publish an empty END_OF_STREAM packet."""
        return self.send(np.empty(0, dtype=EVENT_DTYPE), flags=PacketFlags.END_OF_STREAM)

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("publisher is closed")

    def close(self, linger_ms: int | None = None) -> None:
        """Close the socket (delivering queued packets for up to ``linger_ms``); idempotent."""
        if self._closed:
            return
        self._closed = True
        self._teardown(self.linger_ms if linger_ms is None else int(linger_ms))

    def _teardown(self, linger_ms: int) -> None:
        self.socket.close(linger=linger_ms)
        if self._auth is not None:
            self._auth.stop()
        self._ctx.term()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# ----------------------------------------------------------------------------- subscriber


class Packet(NamedTuple):
    """One received event packet (an immutable named tuple).

    Attributes:
        header: The decoded header.
        events: ``[header.n_events]`` :data:`EVENT_DTYPE`, read-only (a view of the message).
        recv_time_ns: ``time.time_ns()`` when the drain thread took it off the socket.
    """

    header: PacketHeader
    events: Events
    recv_time_ns: int

    @property
    def transit_ms(self) -> float:
        """Send-to-receipt time from the header's sender clock (same host: exact)."""
        return (self.recv_time_ns - self.header.send_time_ns) / 1e6


class StreamState(NamedTuple):
    """Per-stream tracking: the sequence number expected next and the latest time seen."""

    next_seq: int
    t_last_us: int


MAX_SEQ_GAP = 1 << 24
"""A forward jump of the sequence number by more than this (about 23 h of 5 ms packets)
is not counted as loss: the stream was renumbered (a hostile or broken sender, or a
publisher restarted between two packets we saw), so it is treated as a restart."""


class SequenceCheck(NamedTuple):
    """Result of :func:`sequence_step`."""

    state: StreamState
    lost: int
    """Packets missing between the previous one and this one."""
    late: bool
    """This packet starts before the stream's latest time: the time base went back."""
    restart: bool
    """The sequence number went back (the publisher restarted) or jumped forward by more
    than :data:`MAX_SEQ_GAP`."""
    discontinuity: bool = False
    """Consumers must reset here: the packet is flagged ``DISCONTINUITY``, or it is a
    restart, or it is late (time went back). Every stage that keeps time (binner,
    engine, decision, recorder) starts afresh from this packet."""


def sequence_step(state: StreamState | None, header: PacketHeader) -> SequenceCheck:
    """Check one packet's sequence number and timestamps against its stream's state.

    The first packet of a stream (``state is None``) counts no loss: a subscriber that
    joins late has missed nothing it could expect. A packet flagged ``DISCONTINUITY``, a
    restart (sequence number back, or forward by more than :data:`MAX_SEQ_GAP`) or a
    backward jump of the time base resets the time reference to this packet's
    ``t_last_us`` — never the maximum seen, so that a restarted publisher's events are
    not all "late" — and is reported as a discontinuity.
    """
    fresh = StreamState(header.seq + 1, header.t_last_us)
    if state is None:
        return SequenceCheck(fresh, 0, False, False, header.discontinuity)
    if header.seq < state.next_seq or header.seq - state.next_seq > MAX_SEQ_GAP:
        return SequenceCheck(fresh, 0, False, True, True)
    lost = header.seq - state.next_seq
    if header.discontinuity:
        return SequenceCheck(fresh, lost, False, False, True)
    if header.t_first_us < state.t_last_us:
        return SequenceCheck(fresh, lost, True, False, True)
    return SequenceCheck(fresh, lost, False, False, False)


@dataclass(frozen=True)
class SubscriberStats:
    """What a :class:`Subscriber` has seen (a snapshot).

    Attributes:
        received: Valid packets taken off the socket.
        events: Events in them.
        bytes: Bytes of all messages taken off the socket, malformed included.
        lost: Packets missing from sequence gaps: dropped by the publisher's full
            high-water mark or on the network. The publisher cannot count these itself.
        dropped_oldest: Packets the drop-oldest buffer discarded because the consumer
            was slow.
        dropped_events: Events in those packets.
        malformed: Messages that were not valid packets (dropped).
        malformed_reasons: ``malformed`` by :attr:`MalformedPacket.reason`.
        late: Packets whose first timestamp is before the stream's latest: the time
            base went back (kept, passed on as a discontinuity).
        discontinuities: Packets passed on as discontinuities: flagged
            ``DISCONTINUITY`` by the sender, restarts and late packets.
        restarts: Sequence numbers that went back (publisher restarted) or jumped
            forward by more than :data:`MAX_SEQ_GAP`.
        missed_at_join: Packets a stream had sent before this subscriber's first one
            (its first sequence number): the subscriber joined late. Not counted as
            ``lost``; a lossless run starts the publisher with ``--wait-subscribers``.
        ends: END_OF_STREAM packets.
        streams: Stream ids seen.
    """

    received: int = 0
    events: int = 0
    bytes: int = 0
    lost: int = 0
    dropped_oldest: int = 0
    dropped_events: int = 0
    malformed: int = 0
    malformed_reasons: Mapping[str, int] = field(default_factory=dict)
    late: int = 0
    discontinuities: int = 0
    restarts: int = 0
    ends: int = 0
    missed_at_join: int = 0
    streams: tuple[int, ...] = ()

    def __str__(self) -> str:
        text = (
            f"{self.received} packets ({self.events} events) received, {self.lost} lost, "
            f"{self.dropped_oldest} dropped as stale, {self.malformed} malformed, "
            f"{self.late} late, {self.restarts} restarts, "
            f"{self.discontinuities} discontinuities"
        )
        if self.missed_at_join:
            text += f"; joined late: {self.missed_at_join} packets sent before the first one"
        if self.malformed_reasons:
            text += " (" + ", ".join(f"{k}: {v}" for k, v in self.malformed_reasons.items()) + ")"
        return text


_ids = itertools.count()


class Subscriber:
    """Receives event packets; a background thread drains the socket into a bounded buffer.

    Args:
        endpoint: Where the publisher is, e.g. ``tcp://127.0.0.1:5555``.
        buffer_packets: Capacity of the drop-oldest buffer.
        rcvhwm: ZeroMQ's receive high-water mark (packets) below the drain thread.
        curve_server_public: The server's public key (``.key`` file or Z85); enables CURVE.
        curve_client_secret: This client's ``.key_secret`` file; without it a fresh key
            pair is made (enough for a server that accepts any client with its key).

    Raises:
        EndpointError: bad endpoint. TransportError: bad keys.
    """

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        *,
        buffer_packets: int = DEFAULT_BUFFER_PACKETS,
        rcvhwm: int = 1000,
        curve_server_public: str | bytes | Path | None = None,
        curve_client_secret: str | Path | None = None,
    ) -> None:
        transport, host, _ = parse_endpoint(endpoint)
        if buffer_packets < 1:
            raise ValueError(f"buffer_packets must be >= 1, got {buffer_packets}")
        if curve_client_secret is not None and curve_server_public is None:
            raise ValueError("curve_client_secret needs curve_server_public (the server key)")
        self.endpoint = endpoint
        self.buffer_packets = int(buffer_packets)
        self._buffer: collections.deque[Packet] = collections.deque()
        self._cond = threading.Condition()
        self._error: BaseException | None = None
        self._stopped = False
        self._closed = False
        # counters: written by the drain thread under self._cond, snapshot by `stats`
        self._n: dict[str, int] = dict.fromkeys(
            (
                "received",
                "events",
                "bytes",
                "lost",
                "dropped_oldest",
                "dropped_events",
                "malformed",
                "late",
                "discontinuities",
                "restarts",
                "ends",
                "missed_at_join",
            ),
            0,
        )
        self._reasons: collections.Counter[str] = collections.Counter()
        self._streams: dict[int, StreamState] = {}

        self._ctx = zmq.Context(io_threads=1)
        ctrl_addr = f"inproc://smastream-subscriber-{next(_ids)}"
        self._ctrl = self._ctx.socket(zmq.PAIR)
        self._ctrl.setsockopt(zmq.LINGER, 0)
        self._ctrl.bind(ctrl_addr)
        ctrl_in = self._ctx.socket(zmq.PAIR)
        ctrl_in.setsockopt(zmq.LINGER, 0)
        ctrl_in.connect(ctrl_addr)
        sub = self._ctx.socket(zmq.SUB)
        try:
            sub.setsockopt(zmq.LINGER, 0)
            sub.setsockopt(zmq.RCVHWM, int(rcvhwm))
            if transport == "tcp" and ":" in host:
                sub.setsockopt(zmq.IPV6, 1)
            if curve_server_public is not None:
                server_public = load_public_key(curve_server_public)
                if curve_client_secret is None:
                    public, secret = zmq.curve_keypair()
                else:
                    public, secret = load_secret_key(curve_client_secret)
                sub.curve_serverkey = server_public
                sub.curve_publickey = public
                sub.curve_secretkey = secret
            sub.setsockopt(zmq.SUBSCRIBE, b"")
            try:
                sub.connect(endpoint)
            except zmq.ZMQError as exc:
                raise TransportError(f"cannot connect to {endpoint}: {exc}") from None
        except BaseException:
            for s in (sub, ctrl_in, self._ctrl):
                s.close(linger=0)
            self._ctx.term()
            raise
        # the sockets move to the drain thread, which alone uses and closes them
        self._thread = threading.Thread(
            target=self._drain, args=(sub, ctrl_in), name="smastream-subscriber", daemon=True
        )
        self._thread.start()

    # -- drain thread -------------------------------------------------------------------
    def _drain(self, sub: zmq.Socket[Any], ctrl_in: zmq.Socket[Any]) -> None:
        poller = zmq.Poller()
        poller.register(sub, zmq.POLLIN)
        poller.register(ctrl_in, zmq.POLLIN)
        try:
            while True:
                ready = dict(poller.poll())
                if ctrl_in in ready:
                    return
                batch: list[tuple[list[zmq.Frame], int]] = []
                for _ in range(256):
                    try:
                        frames = sub.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    batch.append((frames, time.time_ns()))
                if batch:
                    self._accept(batch)
        except BaseException as exc:  # surfaced to the consumer by recv()
            with self._cond:
                self._error = exc
                self._cond.notify_all()
        finally:
            with self._cond:
                self._stopped = True
                self._cond.notify_all()
            sub.close(linger=0)
            ctrl_in.close(linger=0)

    def _accept(self, batch: list[tuple[list[zmq.Frame], int]]) -> None:
        decoded: list[Packet | None] = []
        reasons: list[str] = []
        n_bytes = 0
        for frames, now in batch:
            n_bytes += sum(len(f) for f in frames)
            try:
                header, events = decode_packet([f.buffer for f in frames])
            except MalformedPacket as exc:
                reasons.append(exc.reason)
                decoded.append(None)
                continue
            decoded.append(Packet(header, events, now))
        n = self._n
        with self._cond:
            n["bytes"] += n_bytes
            n["malformed"] += len(reasons)
            self._reasons.update(reasons)
            for packet in decoded:
                if packet is None:
                    continue
                header = packet.header
                previous = self._streams.get(header.stream_id)
                if previous is None and header.seq <= MAX_SEQ_GAP:
                    n["missed_at_join"] += header.seq
                check = sequence_step(previous, header)
                self._streams[header.stream_id] = check.state
                n["received"] += 1
                n["events"] += header.n_events
                n["lost"] += check.lost
                n["late"] += check.late
                n["restarts"] += check.restart
                n["discontinuities"] += check.discontinuity
                if check.discontinuity and not header.discontinuity:
                    # a restart or a backward time jump: consumers see it as the flag
                    header = header._replace(flags=header.flags | PacketFlags.DISCONTINUITY)
                    packet = packet._replace(header=header)
                n["ends"] += header.end_of_stream
                if len(self._buffer) >= self.buffer_packets:
                    old = self._buffer.popleft()
                    n["dropped_oldest"] += 1
                    n["dropped_events"] += old.header.n_events
                self._buffer.append(packet)
            self._cond.notify_all()

    # -- consumer side ------------------------------------------------------------------
    def recv(self, timeout_s: float | None = 0.0) -> Packet | None:
        """The oldest buffered packet, waiting up to ``timeout_s`` (None: forever).

        Returns None on timeout or once closed and empty.

        Raises:
            TransportError: the drain thread failed (the cause is chained).
        """
        with self._cond:
            if not self._buffer and timeout_s != 0:
                self._cond.wait_for(lambda: bool(self._buffer) or self._stopped, timeout=timeout_s)
            if self._buffer:
                return self._buffer.popleft()
            if self._error is not None:
                raise TransportError(f"subscriber to {self.endpoint} failed: {self._error}") from (
                    self._error
                )
            return None

    def wait_for_end(self, timeout_s: float | None = 10.0) -> bool:
        """Wait until an END_OF_STREAM packet has been received (not necessarily consumed).

        Everything the publisher sent before its end has then been received or counted
        as lost or dropped. Returns False on timeout.
        """
        with self._cond:
            return (
                self._cond.wait_for(lambda: self._n["ends"] > 0 or self._stopped, timeout=timeout_s)
                and self._n["ends"] > 0
            )

    @property
    def pending(self) -> int:
        """Packets buffered, waiting for :meth:`recv`."""
        with self._cond:
            return len(self._buffer)

    @property
    def stats(self) -> SubscriberStats:
        """A consistent snapshot of the counters."""
        with self._cond:
            return SubscriberStats(
                **self._n,
                malformed_reasons=dict(self._reasons),
                streams=tuple(sorted(self._streams)),
            )

    def close(self) -> None:
        """Stop the drain thread and close the sockets without lingering; idempotent.

        Packets still buffered stay readable with :meth:`recv`.
        """
        if self._closed:
            return
        self._closed = True
        try:
            self._ctrl.send(b"stop")
        except zmq.ZMQError:  # pragma: no cover - the thread is already gone
            pass
        self._thread.join()
        self._ctrl.close(linger=0)
        self._ctx.term()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

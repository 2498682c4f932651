"""Wire format and ZeroMQ transport, over real sockets (tcp on 127.0.0.1 ephemeral ports, ipc).

Synchronisation is by messages, never by sleeps: publishers wait for the subscriptions that
their XPUB socket receives (``wait_for_subscribers``), consumers wait for the
END_OF_STREAM packet, CURVE tests wait for handshake events from a socket monitor.
"""

from __future__ import annotations

import argparse
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq
from hypothesis import given
from hypothesis import strategies as st
from zmq.utils.monitor import recv_monitor_message

from smastream.commands import keys as keys_command
from smastream.errors import SmastreamError
from smastream.stream.events import EVENT_DTYPE, Events
from smastream.stream.transport import (
    MAX_SEQ_GAP,
    EndpointError,
    Packet,
    Publisher,
    StreamState,
    Subscriber,
    check_bind_endpoint,
    is_loopback,
    parse_endpoint,
    sequence_step,
)
from smastream.stream.wire import (
    HEADER_SIZE,
    MAGIC,
    MalformedPacket,
    MessageKind,
    PacketFlags,
    PacketHeader,
    decode_packet,
    encode_packet,
    events_header,
)
from tests.conftest import random_events

TIMEOUT_S = 10.0


# ------------------------------------------------------------------------------ helpers


def header_for(events: Events, seq: int = 0, **kw: Any) -> PacketHeader:
    return events_header(
        events,
        stream_id=kw.pop("stream_id", 7),
        seq=seq,
        sensor_size=kw.pop("sensor_size", (128, 128)),
        **kw,
    )


def recv_until_end(sub: Subscriber) -> list[Packet]:
    """Consume packets up to and including the first END_OF_STREAM (fails on timeout)."""
    out: list[Packet] = []
    while True:
        packet = sub.recv(TIMEOUT_S)
        assert packet is not None, f"no END_OF_STREAM within {TIMEOUT_S} s; {sub.stats}"
        out.append(packet)
        if packet.header.end_of_stream:
            return out


@pytest.fixture
def raw_xpub():
    """A bare XPUB socket on an ephemeral port, to send hand-made (bad) messages."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.XPUB)
    sock.setsockopt(zmq.LINGER, 1000)
    sock.bind("tcp://127.0.0.1:*")
    yield sock, sock.getsockopt_string(zmq.LAST_ENDPOINT)
    sock.close()
    ctx.term()


def wait_subscribed(sock: zmq.Socket[Any]) -> None:
    assert sock.poll(int(TIMEOUT_S * 1000)), "no subscription arrived"
    assert sock.recv()[:1] == b"\x01"


# ---------------------------------------------------------------------------- wire format


@given(
    stream_id=st.integers(0, 2**32 - 1),
    seq=st.integers(0, 2**64 - 1),
    w=st.integers(1, 65535),
    h=st.integers(1, 65535),
    t0=st.integers(-(2**53), 2**52),
    dt=st.integers(0, 2**52),
    count=st.integers(0, 2**32 - 1),
    flags=st.sampled_from(list(PacketFlags)),
    sent=st.integers(0, 2**63 - 1),
)
def test_header_round_trip(stream_id, seq, w, h, t0, dt, count, flags, sent):
    header = PacketHeader(stream_id, seq, (w, h), t0, t0 + dt, count, flags, sent)
    raw = header.pack()
    assert len(raw) == HEADER_SIZE == 56
    assert raw[:4] == MAGIC
    assert PacketHeader.unpack(raw) == header
    assert PacketHeader.unpack(memoryview(bytearray(raw))) == header


def test_header_layout_is_little_endian_at_fixed_offsets():
    raw = PacketHeader(0x01020304, 5, (346, 260), -3, 9, 11, PacketFlags.DISCONTINUITY, 13).pack()
    assert raw[4] == 1 and raw[5] == MessageKind.EVENTS
    assert struct.unpack_from("<H", raw, 6)[0] == 2
    assert struct.unpack_from("<II", raw, 8) == (0x01020304, 11)
    assert struct.unpack_from("<Qqqq", raw, 16) == (5, -3, 9, 13)
    assert struct.unpack_from("<HH", raw, 48) == (346, 260)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("stream_id", -1),
        ("stream_id", 2**32),
        ("seq", -1),
        ("n_events", 2**32),
        ("sensor_size", (0, 10)),
        ("sensor_size", (10, 65536)),
        ("t_last_us", -5),
        ("t_last_us", 2**53 + 1),
        ("t_first_us", -(2**53) - 1),
    ],
)
def test_pack_rejects_values_that_do_not_fit(field, value):
    kw: dict[str, Any] = dict(
        stream_id=1, seq=0, sensor_size=(8, 8), t_first_us=0, t_last_us=0, n_events=0
    )
    kw[field] = value
    with pytest.raises(ValueError, match="valid"):
        PacketHeader(**kw).pack()


def test_encode_is_zero_copy_and_decode_is_read_only(rng):
    events = random_events(rng, 1000)
    before = events.copy()
    frames = encode_packet(header_for(events), events)
    assert np.shares_memory(np.frombuffer(frames[1], dtype=EVENT_DTYPE), events)
    header, decoded = decode_packet(frames)
    assert header.n_events == 1000 and header.t_first_us == events["t"][0]
    assert np.array_equal(decoded, events) and decoded.dtype == EVENT_DTYPE
    assert not decoded.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        decoded["x"][0] = 1
    # decoding a writable buffer still gives a read-only view
    _, decoded2 = decode_packet([frames[0], bytearray(frames[1])])
    assert not decoded2.flags.writeable
    assert np.array_equal(events, before)


def test_encode_copies_only_non_contiguous(rng):
    events = random_events(rng, 100)
    strided = events[::2]
    frames = encode_packet(header_for(strided), strided)
    assert not np.shares_memory(np.frombuffer(frames[1], dtype=EVENT_DTYPE), events)
    assert np.array_equal(decode_packet(frames)[1], strided)


def test_encode_rejects_count_and_dtype_mismatch(rng):
    events = random_events(rng, 10)
    with pytest.raises(ValueError, match="n_events=10 but 9"):
        encode_packet(header_for(events), events[:9])
    with pytest.raises(ValueError, match="dtype"):
        encode_packet(
            header_for(events),
            events.astype([("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("p", "i1")]),
        )
    with pytest.raises(ValueError, match="t_range_us"):
        header_for(events[:0])
    with pytest.raises(ValueError, match="does not contain"):
        header_for(events, t_range_us=(int(events["t"][1]), int(events["t"][-1])))


def _bad_messages(events: Events) -> list[tuple[str, list[bytes]]]:
    """(reason, frames) for each kind of malformed message."""
    good = header_for(events).pack()
    payload = events.tobytes()
    hdr = bytearray(good)

    def patched(offset: int, fmt: str, value: int) -> bytes:
        b = bytearray(hdr)
        struct.pack_into(fmt, b, offset, value)
        return bytes(b)

    return [
        ("frames", [b"garbage"]),
        ("frames", [good, payload, b"extra"]),
        ("header size", [good[:20], payload]),
        ("header size", [good + b"\0", payload]),
        ("magic", [b"NOPE" + good[4:], payload]),
        ("version", [patched(4, "<B", 2), payload]),
        ("kind", [patched(5, "<B", 9), payload]),
        ("kind", [patched(5, "<B", int(MessageKind.PREDICTIONS)), payload]),
        ("flags", [patched(6, "<H", 0x80), payload]),
        ("sensor size", [patched(48, "<H", 0), payload]),
        ("payload size", [good, payload[:-13]]),
        ("payload size", [good, payload + b"\0"]),
        ("payload size", [patched(12, "<I", len(events) + 1), payload]),
        ("timestamps", [patched(24, "<q", int(events["t"][0]) + 1), payload]),
        ("timestamps", [patched(32, "<q", int(events["t"][0]) - 1), payload]),
        ("timestamps", [patched(32, "<q", 2**63 - 1), payload]),
        ("timestamps", [patched(24, "<q", -(2**63)), payload]),
        ("timestamps", [good, _swapped(events).tobytes()]),
    ]


def _swapped(events: Events) -> Events:
    """The events with the 2nd and 3rd swapped: first and last unchanged, not sorted."""
    out = events.copy()
    out[[1, 2]] = out[[2, 1]]
    assert out["t"][1] > out["t"][2]
    return out


def test_decode_rejects_each_malformation_with_its_reason(rng):
    events = random_events(rng, 20)
    for reason, frames in _bad_messages(events):
        with pytest.raises(MalformedPacket) as info:
            decode_packet(frames)
        assert info.value.reason == reason, (reason, str(info.value))
        assert isinstance(info.value, SmastreamError)


def test_sequence_step_counts_gaps_late_and_restarts():
    def h(seq: int, t0: int, t1: int, flags: PacketFlags = PacketFlags.NONE) -> PacketHeader:
        return PacketHeader(1, seq, (8, 8), t0, t1, 0, flags)

    first = sequence_step(None, h(40, 0, 10))  # joining late is not a loss
    assert first == (StreamState(41, 10), 0, False, False, False)
    gap = sequence_step(first.state, h(44, 10, 20))
    assert (gap.lost, gap.late, gap.discontinuity) == (3, False, False)
    # time goes back: late, and a discontinuity whose time base is this packet's
    late = sequence_step(gap.state, h(45, 15, 30))
    assert (late.lost, late.late, late.discontinuity) == (0, True, True)
    back = sequence_step(late.state, h(46, 0, 5))
    assert (back.late, back.discontinuity, back.state.t_last_us) == (True, True, 5)
    jump = sequence_step(back.state, h(47, 0, 5, PacketFlags.DISCONTINUITY))
    assert (jump.late, jump.discontinuity, jump.state.t_last_us) == (False, True, 5)
    restart = sequence_step(jump.state, h(0, 0, 1))
    assert restart.restart and restart.lost == 0 and restart.state.next_seq == 1
    assert restart.discontinuity and restart.state.t_last_us == 1
    # a renumbered stream (seq 2**64-1) is a restart, not 2**64 lost packets
    huge = sequence_step(restart.state, h(2**64 - 1, 2, 3))
    assert (huge.restart, huge.lost, huge.discontinuity) == (True, 0, True)
    after = sequence_step(huge.state, h(5, 4, 6))
    assert (after.restart, after.lost) == (True, 0)
    near = sequence_step(after.state, h(6 + MAX_SEQ_GAP, 7, 8))
    assert (near.restart, near.lost) == (False, MAX_SEQ_GAP)


# ------------------------------------------------------------------------------ endpoints


@pytest.mark.parametrize(
    ("endpoint", "loopback"),
    [
        ("tcp://127.0.0.1:5555", True),
        ("tcp://127.0.0.1:*", True),
        ("tcp://localhost:1", True),
        ("tcp://[::1]:5555", True),
        ("ipc:///tmp/x.ipc", True),
        ("inproc://x", True),
        ("tcp://0.0.0.0:5555", False),
        ("tcp://*:5555", False),
        ("tcp://192.168.1.4:5555", False),
        ("tcp://eth0:5555", False),
        ("tcp://camera-host:5555", False),
    ],
)
def test_loopback_detection(endpoint, loopback):
    assert is_loopback(endpoint) is loopback
    if loopback:
        assert check_bind_endpoint(endpoint) == endpoint
    else:
        with pytest.raises(EndpointError, match="allow_remote"):
            check_bind_endpoint(endpoint)
        assert check_bind_endpoint(endpoint, allow_remote=True) == endpoint


@pytest.mark.parametrize(
    "endpoint",
    ["127.0.0.1:5555", "udp://127.0.0.1:5", "tcp://5555", "tcp://", "pgm://eth0;239.1.1.1:5555"],
)
def test_bad_endpoints_are_refused(endpoint):
    with pytest.raises(EndpointError, match=r"tcp://127\.0\.0\.1:5555|transport"):
        parse_endpoint(endpoint)


def test_publisher_refuses_remote_bind_unless_asked():
    with pytest.raises(EndpointError, match=r"refusing to bind 'tcp://0\.0\.0\.0:0'"):
        Publisher("tcp://0.0.0.0:0", (128, 128))
    with pytest.raises(EndpointError):
        Publisher("tcp://*:0", (128, 128))
    with Publisher("tcp://0.0.0.0:*", (128, 128), allow_remote=True) as pub:
        assert pub.endpoint.startswith("tcp://0.0.0.0:")


# ------------------------------------------------------------------------------ transport


def _endpoint(kind: str, tmp_path: Path) -> str:
    return "tcp://127.0.0.1:*" if kind == "tcp" else f"ipc://{tmp_path / 's.ipc'}"


@pytest.mark.parametrize("kind", ["tcp", "ipc"])
def test_every_packet_arrives_in_order(kind, tmp_path, rng):
    events = random_events(rng, 60_000, size=(346, 260))
    packets = np.array_split(events, 30)
    sent_copy = events.copy()
    with (
        Publisher(_endpoint(kind, tmp_path), "davis346", stream_id=3) as pub,
        Subscriber(pub.endpoint, buffer_packets=64) as sub,
    ):
        assert pub.wait_for_subscribers(1, TIMEOUT_S)
        for p in packets:
            pub.send(p)
        gap_end = int(events["t"][-1]) + 1000
        pub.send(events[:0], t_range_us=(int(events["t"][-1]), gap_end))  # quiet period
        pub.send_end()
        got = recv_until_end(sub)
        stats = sub.stats
    assert [p.header.seq for p in got] == list(range(32))
    assert all(p.header.stream_id == 3 and p.header.sensor_size == (346, 260) for p in got)
    assert np.array_equal(np.concatenate([p.events for p in got]), events)
    assert got[-2].header.n_events == 0 and got[-2].header.t_last_us == gap_end
    assert got[-1].header.t_first_us == gap_end  # an end without span keeps the last time
    assert all(not p.events.flags.writeable for p in got)
    assert all(p.transit_ms >= 0 for p in got)
    assert np.array_equal(events, sent_copy)  # sender's array untouched
    assert (stats.received, stats.events, stats.lost, stats.dropped_oldest) == (32, 60_000, 0, 0)
    assert (stats.malformed, stats.late, stats.ends, stats.streams) == (0, 0, 1, (3,))
    assert pub.stats.packets == 32 and pub.stats.events == 60_000
    assert pub.stats.bytes == 32 * 56 + 60_000 * 13


def test_fan_out_to_two_subscribers_and_flags(rng):
    events = random_events(rng, 3000)
    a, b, c = np.array_split(events, 3)
    with (
        Publisher("tcp://127.0.0.1:*", (128, 128)) as pub,
        Subscriber(pub.endpoint) as s1,
        Subscriber(pub.endpoint) as s2,
    ):
        assert pub.wait_for_subscribers(2, TIMEOUT_S)
        assert pub.subscribers == 2
        pub.send(b)
        pub.send(a)  # goes back in time: late, delivered as a discontinuity
        pub.send(c, flags=PacketFlags.DISCONTINUITY)
        pub.send_end()
        for sub in (s1, s2):
            got = recv_until_end(sub)
            assert [p.header.n_events for p in got] == [len(b), len(a), len(c), 0]
            assert [p.header.discontinuity for p in got] == [False, True, True, False]
            stats = sub.stats
            assert (stats.received, stats.late, stats.discontinuities, stats.lost) == (4, 1, 2, 0)


def test_slow_consumer_gets_the_newest_and_counts_dropped_oldest(rng):
    events = random_events(rng, 50 * 200)
    with (
        Publisher("tcp://127.0.0.1:*", (128, 128)) as pub,
        Subscriber(pub.endpoint, buffer_packets=4) as sub,
    ):
        assert pub.wait_for_subscribers(1, TIMEOUT_S)
        first = pub.send(events[:200])
        assert sub.recv(TIMEOUT_S) is not None  # the consumer reads one, then stalls
        for p in np.split(events[200:], 49):
            pub.send(p)
        pub.send_end()
        assert sub.wait_for_end(TIMEOUT_S)
        stats = sub.stats
        got = recv_until_end(sub)
    assert first.seq == 0
    assert [p.header.seq for p in got] == [47, 48, 49, 50]  # the freshest, in order
    assert stats.received == 51 and stats.lost == 0
    assert stats.dropped_oldest == 51 - 1 - 4 and stats.dropped_events == 46 * 200
    assert stats.received == 1 + stats.dropped_oldest + len(got)


def test_sequence_gaps_on_the_wire_are_counted_as_lost(raw_xpub, rng):
    sock, endpoint = raw_xpub
    events = random_events(rng, 100)
    with Subscriber(endpoint) as sub:
        wait_subscribed(sock)
        seqs = [0, 1, 4, 5, 9]  # 2,3 and 6,7,8 dropped upstream
        for seq in seqs:
            sock.send_multipart(encode_packet(header_for(events, seq), events))
        t_end = int(events["t"][-1])
        end = PacketHeader(7, 10, (128, 128), t_end, t_end, 0, PacketFlags.END_OF_STREAM)
        sock.send_multipart([end.pack(), b""])
        got = recv_until_end(sub)
        stats = sub.stats
    assert [p.header.seq for p in got] == [*seqs, 10]
    assert stats.lost == 5 and stats.received == 6
    assert stats.late == 4  # each repeat of the same events starts before the last one
    assert stats.discontinuities == 4 and [p.header.discontinuity for p in got[:5]] == [
        False,
        True,
        True,
        True,
        True,
    ]


def test_malformed_messages_are_counted_and_dropped(raw_xpub, rng):
    sock, endpoint = raw_xpub
    events = random_events(rng, 50)
    bad = _bad_messages(events)
    with Subscriber(endpoint) as sub:
        wait_subscribed(sock)
        seq = 0
        for _, frames in bad:
            sock.send_multipart(encode_packet(header_for(events, seq), events))
            seq += 1
            sock.send_multipart(frames)
        end = header_for(events[:0], seq, t_range_us=(0, 0), flags=PacketFlags.END_OF_STREAM)
        sock.send_multipart([end.pack(), b""])
        got = recv_until_end(sub)
        stats = sub.stats
    assert [p.header.seq for p in got] == list(range(len(bad) + 1))
    assert all(np.array_equal(p.events, events) for p in got[:-1])
    assert stats.malformed == len(bad)
    expected: dict[str, int] = {}
    for reason, _ in bad:
        expected[reason] = expected.get(reason, 0) + 1
    assert dict(stats.malformed_reasons) == expected
    assert stats.received == len(bad) + 1 and stats.lost == 0
    assert "malformed" in str(stats)


def test_recv_times_out_and_close_is_prompt_and_idempotent(rng):
    with Publisher("tcp://127.0.0.1:*", (128, 128)) as pub:
        sub = Subscriber(pub.endpoint)
        assert pub.wait_for_subscribers(1, TIMEOUT_S)
        assert sub.recv(0) is None
        assert sub.recv(0.01) is None
        pub.send(random_events(rng, 10))
        pub.send_end()
        assert sub.wait_for_end(TIMEOUT_S)
        sub.close()
        sub.close()
        assert sub.pending == 2  # buffered packets stay readable after close
        assert sub.recv(None) is not None and sub.recv(None) is not None
        assert sub.recv(None) is None  # closed and empty: no hang
    pub.close()
    with pytest.raises(ValueError, match="closed"):
        pub.send_end()


def test_nodrop_publisher_times_out_instead_of_dropping(rng):
    events = random_events(rng, 10_000)
    ctx = zmq.Context()
    stalled = ctx.socket(zmq.SUB)  # subscribes, never reads
    stalled.setsockopt(zmq.RCVHWM, 1)
    stalled.setsockopt(zmq.SUBSCRIBE, b"")
    try:
        with Publisher(
            "tcp://127.0.0.1:*", (128, 128), hwm=1, nodrop=True, send_timeout_ms=20, linger_ms=0
        ) as pub:
            stalled.connect(pub.endpoint)
            assert pub.wait_for_subscribers(1, TIMEOUT_S)
            with pytest.raises(TimeoutError, match="stayed full"):
                for _ in range(10_000):  # kernel buffers fill after a few MB
                    pub.send(events)
            assert pub.stats.send_timeouts == 1
            assert pub.seq == pub.stats.packets
    finally:
        stalled.close(linger=0)
        ctx.term()


# ---------------------------------------------------------------------------------- CURVE


@pytest.fixture
def keys(tmp_path):
    server = keys_command.create_keypair(tmp_path / "server")
    client = keys_command.create_keypair(tmp_path / "client", "laptop")
    other = keys_command.create_keypair(tmp_path / "other", "other")
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "laptop.key").write_bytes(client[0].read_bytes())
    return {"server": server, "client": client, "other": other, "allowed": allowed}


class HandshakeMonitor:
    """Handshake events of a publisher's socket, to wait for a client's failure by message."""

    def __init__(self, pub: Publisher) -> None:
        self.pub = pub
        self.sock = pub.socket.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
            | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
            | zmq.EVENT_HANDSHAKE_FAILED_AUTH
        )

    def wait_failure(self) -> int:
        assert self.sock.poll(int(TIMEOUT_S * 1000)), "no handshake failure seen"
        return int(recv_monitor_message(self.sock)["event"])

    def close(self) -> None:
        self.pub.socket.disable_monitor()
        self.sock.close(linger=0)


def _send_burst(pub: Publisher, events: Events) -> None:
    for p in np.array_split(events, 5):
        pub.send(p)
    pub.send_end()


def test_curve_publisher_delivers_only_to_clients_with_the_server_key(keys, rng):
    events = random_events(rng, 5000)
    server_public, server_secret = keys["server"]
    with Publisher("tcp://127.0.0.1:*", (128, 128), curve_server_secret=server_secret) as pub:
        monitor = HandshakeMonitor(pub)
        plain = Subscriber(pub.endpoint)  # no CURVE at all
        monitor.wait_failure()
        wrong = Subscriber(pub.endpoint, curve_server_public=keys["other"][0])  # wrong key
        monitor.wait_failure()
        good = Subscriber(pub.endpoint, curve_server_public=server_public)  # fresh client key
        try:
            assert pub.wait_for_subscribers(1, TIMEOUT_S)
            _send_burst(pub, events)
            got = recv_until_end(good)
            assert np.array_equal(np.concatenate([p.events for p in got]), events)
            assert pub.subscribers == 1  # the others never got as far as subscribing
            for bad in (plain, wrong):
                assert bad.recv(0) is None
                assert bad.stats.bytes == 0 and bad.stats.received == 0
        finally:
            monitor.close()
            for s in (plain, wrong, good):
                s.close()


def test_curve_clients_folder_admits_only_listed_clients(keys, rng):
    events = random_events(rng, 1000)
    server_public, server_secret = keys["server"]
    with Publisher(
        "tcp://127.0.0.1:*",
        (128, 128),
        curve_server_secret=server_secret,
        curve_clients_dir=keys["allowed"],
    ) as pub:
        monitor = HandshakeMonitor(pub)
        stranger = Subscriber(pub.endpoint, curve_server_public=server_public)
        assert monitor.wait_failure() == zmq.EVENT_HANDSHAKE_FAILED_AUTH
        known = Subscriber(
            pub.endpoint, curve_server_public=server_public, curve_client_secret=keys["client"][1]
        )
        try:
            assert pub.wait_for_subscribers(1, TIMEOUT_S)
            _send_burst(pub, events)
            assert len(recv_until_end(known)) == 6
            assert pub.subscribers == 1
            assert stranger.stats.bytes == 0
        finally:
            monitor.close()
            stranger.close()
            known.close()


def test_curve_key_errors_are_clear(keys, tmp_path):
    with pytest.raises(SmastreamError, match="no secret key"):
        Publisher("tcp://127.0.0.1:*", (8, 8), curve_server_secret=keys["server"][0])
    with pytest.raises(SmastreamError, match="cannot read"):
        Subscriber("tcp://127.0.0.1:1", curve_server_public=tmp_path / "missing.key")
    with pytest.raises(ValueError, match="curve_clients_dir needs"):
        Publisher("tcp://127.0.0.1:*", (8, 8), curve_clients_dir=keys["allowed"])


# ---------------------------------------------------------------------------- keys command


def test_keys_command_creates_refuses_and_forces(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    keys_command.add_arguments(parser)
    target = tmp_path / "new" / "keys"
    assert keys_command.run(parser.parse_args([str(target)])) == 0
    public, secret = target / "server.key", target / "server.key_secret"
    assert str(public) in capsys.readouterr().out
    assert os.stat(secret).st_mode & 0o777 == 0o600
    pub_key, sec_key = zmq.auth.load_certificate(secret)
    assert sec_key and pub_key == zmq.auth.load_certificate(public)[0]
    with pytest.raises(SmastreamError, match=r"already exist.*--force"):
        keys_command.run(parser.parse_args([str(target)]))
    assert zmq.auth.load_certificate(secret) == (pub_key, sec_key)  # untouched
    assert keys_command.run(parser.parse_args([str(target), "--force"])) == 0
    assert zmq.auth.load_certificate(secret)[0] != pub_key
    keys_command.run(parser.parse_args([str(target), "--name", "laptop-1"]))
    assert (target / "laptop-1.key").is_file()
    with pytest.raises(SystemExit):
        parser.parse_args([str(target), "--name", "../evil"])


def test_a_late_join_is_counted_apart_from_loss_and_a_restart_is_flagged(raw_xpub, rng):
    """The first packet seen is seq 5: five were sent before this subscriber joined (not
    lost). Then the publisher restarts at seq 0, time 0: passed on as a discontinuity."""
    sock, endpoint = raw_xpub
    events = random_events(rng, 30, t0=1_000_000)
    early = random_events(rng, 30, t0=0)
    with Subscriber(endpoint) as sub:
        wait_subscribed(sock)
        for seq in (5, 6):
            sock.send_multipart(encode_packet(header_for(events, seq), events))
        sock.send_multipart(encode_packet(header_for(early, 0), early))
        t_end = int(early["t"][-1])
        end = PacketHeader(7, 1, (128, 128), t_end, t_end, 0, PacketFlags.END_OF_STREAM)
        sock.send_multipart([end.pack(), b""])
        got = recv_until_end(sub)
        stats = sub.stats
    assert [p.header.discontinuity for p in got] == [False, True, True, False]
    assert (stats.missed_at_join, stats.lost, stats.restarts, stats.late) == (5, 0, 1, 1)
    assert "joined late: 5 packets" in str(stats)

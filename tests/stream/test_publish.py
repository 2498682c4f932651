from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from smastream.cli import main
from smastream.stream.events import Events
from smastream.stream.formats import open_events, open_writer
from smastream.stream.publish import PublishStats, publish
from smastream.stream.sources import FileSource
from smastream.stream.transport import Publisher, Subscriber
from tests.conftest import random_events


@pytest.fixture
def recording(tmp_path: Path, rng: np.random.Generator) -> tuple[Path, Events]:
    ev = random_events(rng, 200_000, size=(128, 128), t0=10_000, mean_dt_us=1.0)
    path = tmp_path / "source.aedat4"
    with open_writer(path, (128, 128)) as w:
        w.write(ev)
    return path, ev


def _read_all(path: Path) -> Events:
    with open_events(path) as r:
        return np.concatenate(list(r))


def test_slow_subscriber_loses_packets_but_the_recording_keeps_every_event(
    tmp_path: Path, recording: tuple[Path, Events]
) -> None:
    path, ev = recording
    record = tmp_path / "record.aedat4"
    result: dict[str, PublishStats] = {}
    with (
        Publisher("tcp://127.0.0.1:*", (128, 128), hwm=2) as pub,
        Subscriber(pub.endpoint, buffer_packets=2, rcvhwm=2) as sub,
    ):
        assert pub.wait_for_subscribers(1, timeout_s=10)
        source = FileSource(path, speed=None, packet_us=500)
        writer = open_writer(record, (128, 128))

        def produce() -> None:
            try:
                result["stats"] = publish(source, pub, recorder=writer)
            finally:
                writer.close()
                source.close()

        producer = threading.Thread(target=produce)
        producer.start()
        received = 0
        while True:  # a deliberately slow consumer
            packet = sub.recv(timeout_s=2.0)
            if packet is None or packet.header.end_of_stream:
                break
            received += packet.header.n_events
            time.sleep(0.005)
        producer.join(timeout=30)
        stats = sub.stats
    assert result["stats"].events == len(ev) == result["stats"].recorded
    assert received < len(ev)
    assert stats.lost + stats.dropped_oldest > 0
    np.testing.assert_array_equal(_read_all(record), ev)


def test_publish_command_delivers_every_packet_in_order(
    tmp_path: Path, recording: tuple[Path, Events], capsys: pytest.CaptureFixture[str]
) -> None:
    path, ev = recording
    endpoint = f"ipc://{tmp_path / 'cam.ipc'}"
    codes: list[int] = []
    with Subscriber(endpoint, buffer_packets=100_000) as sub:
        cmd = threading.Thread(
            target=lambda: codes.append(
                main(
                    [
                        "publish",
                        str(path),
                        "--bind",
                        endpoint,
                        "--speed",
                        "50",
                        "--packet-ms",
                        "2",
                        "--wait-subscribers",
                        "1",
                        "--quiet",
                    ]
                )
            )
        )
        cmd.start()
        assert sub.wait_for_end(timeout_s=30)
        cmd.join(timeout=30)
        packets = []
        while (p := sub.recv(timeout_s=0)) is not None:
            packets.append(p)
        stats = sub.stats
    assert codes == [0]
    assert stats.lost == 0 and stats.dropped_oldest == 0 and stats.malformed == 0
    seqs = [p.header.seq for p in packets]
    assert seqs == list(range(len(packets)))
    assert packets[-1].header.end_of_stream
    got = np.concatenate([p.events for p in packets])
    np.testing.assert_array_equal(got, ev)
    assert f"on {endpoint}" in capsys.readouterr().err


def test_publish_refuses_remote_bind_without_flag(
    recording: tuple[Path, Events], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = recording
    code = main(["publish", str(path), "--bind", "tcp://0.0.0.0:5599", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert len(err.splitlines()) == 1 and "Traceback" not in err

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import numpy as np
import pytest

from smastream.errors import SmastreamError
from smastream.stream.events import Events
from smastream.stream.formats import open_writer
from smastream.stream.sources import (
    CameraSource,
    FileSource,
    Pacer,
    SourcePacket,
    SyntheticSource,
    list_cameras,
)
from tests.conftest import random_events


@pytest.fixture
def recording(tmp_path: Path, rng: np.random.Generator) -> tuple[Path, Events]:
    ev = random_events(rng, 20_000, size=(128, 128), t0=1_234_567, mean_dt_us=5.0)
    path = tmp_path / "rec.aedat4"
    with open_writer(path, (128, 128)) as w:
        for part in np.array_split(ev, 7):
            w.write(part)
    return path, ev


def _check_grid(packets: list[SourcePacket], packet_us: int) -> None:
    ends = [p.t_end_us for p in packets]
    assert all(e % packet_us == 0 for e in ends)
    assert np.all(np.diff(ends) == packet_us)  # no packet missing, quiet ones included
    for p in packets:
        if len(p.events):
            assert p.events["t"][0] >= p.t_end_us - packet_us
            assert p.events["t"][-1] < p.t_end_us
            assert np.all(np.diff(p.events["t"]) >= 0)


def test_file_source_conserves_events_on_a_fixed_grid(recording: tuple[Path, Events]) -> None:
    path, ev = recording
    src = FileSource(path, speed=None, packet_us=2_000)
    assert src.sensor_size == (128, 128)
    packets = list(src.packets())
    src.close()
    _check_grid(packets, 2_000)
    got = np.concatenate([p.events for p in packets])
    np.testing.assert_array_equal(got, ev)
    assert not any(p.discontinuity for p in packets)


def test_file_source_seeks_by_time(recording: tuple[Path, Events]) -> None:
    path, ev = recording
    start = int(ev["t"][len(ev) // 2])
    with_seek = FileSource(path, speed=None, start_us=start)
    got = np.concatenate([p.events for p in with_seek.packets()])
    with_seek.close()
    np.testing.assert_array_equal(got, ev[ev["t"] >= start])


def test_file_source_loop_keeps_time_monotonic_and_flags_restart(
    recording: tuple[Path, Events],
) -> None:
    path, ev = recording
    src = FileSource(path, speed=None, loop=True, packet_us=5_000)
    n_per_pass = len(list(FileSource(path, speed=None, packet_us=5_000).packets()))
    packets = list(itertools.islice(src.packets(), 2 * n_per_pass + 3))
    src.close()
    ends = np.array([p.t_end_us for p in packets])
    assert np.all(np.diff(ends) > 0)
    restarts = [i for i, p in enumerate(packets) if p.discontinuity]
    assert restarts == [n_per_pass, 2 * n_per_pass]
    first_pass = np.concatenate([p.events for p in packets[:n_per_pass]])
    second_pass = np.concatenate([p.events for p in packets[n_per_pass : 2 * n_per_pass]])
    assert len(second_pass) == len(ev)
    assert second_pass["t"][0] > first_pass["t"][-1]
    shift = int(second_pass["t"][0] - ev["t"][0])
    np.testing.assert_array_equal(second_pass["t"] - shift, ev["t"])
    np.testing.assert_array_equal(second_pass[["x", "y", "p"]], ev[["x", "y", "p"]])


def test_pacer_follows_recorded_time() -> None:
    now = [100.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    pacer = Pacer(2.0, clock=lambda: now[0], sleep=sleep)
    pacer.wait_until(1_000_000)  # anchors
    pacer.wait_until(1_500_000)  # 0.5 s of sensor time at 2x -> 0.25 s
    now[0] += 0.1  # the consumer was busy for 0.1 s
    pacer.wait_until(2_000_000)  # due at 100.5, now 100.35
    assert slept == pytest.approx([0.25, 0.15])
    with pytest.raises(ValueError, match="speed"):
        Pacer(0.0)


def test_file_source_replays_real_davis_recording(real_data: Path) -> None:
    src = FileSource(real_data / "aestream" / "davis.aedat4", speed=None)
    assert src.sensor_size == (346, 260)
    packets = list(src.packets())
    src.close()
    _check_grid(packets, 5_000)
    assert sum(len(p.events) for p in packets) == 117_667


def test_camera_source_without_camera_says_what_it_sees() -> None:
    # Real dv-processing discovery; the assertion needs a machine with no camera (CI).
    if list_cameras():
        pytest.skip("a camera is attached")
    with pytest.raises(SmastreamError) as err:
        CameraSource("davis346")
    msg = str(err.value)
    assert "cameras found: none" in msg and "smastream replay" in msg
    assert "\n" not in msg


def test_synthetic_source_is_a_paced_live_camera() -> None:
    src = SyntheticSource("dvs128", seconds=10.0, seed=11, speed=None, packet_us=10_000)
    packets = list(src.packets())
    _check_grid(packets, 10_000)
    assert packets[-1].t_end_us >= 10_000_000
    ev = np.concatenate([p.events for p in packets])
    # the calibrated sensor is sparse (about 1 kev/s in still and slow scenes, as real
    # DVS128 recordings of people): 10 s hold several thousand events, not tens of thousands
    assert len(ev) > 5_000
    assert src.labels and all(w.end_us <= 10_000_000 for w in src.labels)


def test_subscriber_source_passes_a_publisher_restart_on_as_a_discontinuity(
    rng: np.random.Generator,
) -> None:
    """Two publisher lives on one endpoint: the second starts at seq 0 and t 0 again.
    The source flags it and its time base starts over (t_end_us not max-clamped)."""
    from smastream.stream.sources import SubscriberSource
    from smastream.stream.transport import Publisher

    first = random_events(rng, 300, t0=5_000_000)
    second = random_events(rng, 300, t0=1_000)
    pub = Publisher("tcp://127.0.0.1:*", (128, 128))
    endpoint = pub.endpoint
    try:
        # the source blocks until its first packet: open it in a thread
        holder: dict[str, SubscriberSource] = {}
        opener = threading.Thread(target=lambda: holder.update(s=SubscriberSource(endpoint)))
        opener.start()
        assert pub.wait_for_subscribers(1, 10.0)
        for part in np.array_split(first, 3):
            pub.send(part)
        opener.join(10.0)
        source = holder["s"]
        pub.close()
        pub = Publisher(endpoint, (128, 128))  # the restart: same endpoint, seq 0, t 0
        assert pub.wait_for_subscribers(1, 10.0)
        for part in np.array_split(second, 3):
            pub.send(part)
        pub.send_end()
        packets = list(source.packets())  # up to the END_OF_STREAM
        stats = source.transport_stats()
        source.close()
    finally:
        pub.close()
    real = [p for p in packets if len(p.events)]
    assert [p.discontinuity for p in real] == [False, False, False, True, False, False]
    np.testing.assert_array_equal(
        np.concatenate([p.events for p in real]), np.concatenate([first, second])
    )
    restart = real[3]
    assert restart.t_end_us == int(restart.events["t"][-1]) + 1 < int(first["t"][-1])
    assert stats.restarts == 1 and stats.lost == 0

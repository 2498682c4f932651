"""The overlay checked as an image, the mp4 sink read back, and the display check."""

from __future__ import annotations

import shutil
import socket
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from smastream.errors import SmastreamError
from smastream.stream.decision import Decider, Decision, DecisionConfig
from smastream.stream.overlay import (
    ACCENT,
    BANNER_H,
    BAR,
    BOTH_COLOUR,
    OFF_COLOUR,
    ON_COLOUR,
    PALETTE,
    PANEL_W,
    OverlayStats,
    VideoSink,
    auto_scale,
    events_image,
    has_display,
    overlay_size,
    render_overlay,
)

STATS = OverlayStats(fps=30.0, stage_ms={"binner": 0.4, "engine": 3.1}, source="test")


def decision_for(logits: np.ndarray) -> Decision:
    """A real decision whose smoothed probabilities are ``softmax(logits)``."""
    d = Decider(DecisionConfig(smooth_ms=0.0, hold_steps=1, min_confidence=0.0))
    return d.update(logits[None, :], [1000], 0, 10_000)[-1]


def labelled(label: int) -> Decision:
    z = np.zeros(11)
    z[label] = 5.0
    return decision_for(z)


def no_gesture() -> Decision:
    d = Decider(DecisionConfig(smooth_ms=0.0, hold_steps=1))
    out = d.update(np.zeros((1, 11)), [0], 0, 10_000)[-1]
    assert out.label is None
    return out


def colour_at(img: np.ndarray, y: int, x: int) -> tuple[int, ...]:
    return tuple(int(v) for v in img[y, x])


@pytest.mark.parametrize(
    ("h", "w", "scale"), [(128, 128, 4), (64, 64, 8), (260, 346, 2), (5, 7, 1)]
)
def test_size_is_fixed_by_input_size_and_scale(h: int, w: int, scale: int) -> None:
    frames = np.zeros((3, 2, h, w), np.float32)
    expected = overlay_size(h, w, scale)
    assert expected[1] == w * scale + PANEL_W and expected[0] >= BANNER_H + h * scale
    for dec in (None, labelled(3), no_gesture()):
        img = render_overlay(frames, dec, STATS, scale)
        assert img.shape == (*expected, 3) and img.dtype == np.uint8
    assert render_overlay(frames[0], None, OverlayStats(), scale).shape == (*expected, 3)


def test_auto_scale() -> None:
    assert (auto_scale(128, 128), auto_scale(64, 64), auto_scale(260, 346)) == (4, 8, 1)
    assert auto_scale(1000, 2000) == 1


def test_events_drawn_in_on_off_colours_where_the_counts_are() -> None:
    h, w, s = 16, 20, 3
    frames = np.zeros((4, 2, h, w), np.float32)
    frames[0, 1, 2, 3] = 1  # ON only, in step 0
    frames[3, 0, 10, 15] = 2  # OFF only, in the last step
    frames[1, 1, 7, 7] = 1  # both, in different steps
    frames[2, 0, 7, 7] = 1
    img = render_overlay(frames, labelled(0), STATS, s)
    ev = img[BANNER_H : BANNER_H + h * s, : w * s]
    expected = {(2, 3): ON_COLOUR, (10, 15): OFF_COLOUR, (7, 7): BOTH_COLOUR}
    for (y, x), colour in expected.items():
        block = ev[y * s : (y + 1) * s, x * s : (x + 1) * s]
        assert (block == np.array(colour, np.uint8)).all(), (y, x)
    mask = np.zeros((h, w), bool)
    for y, x in expected:
        mask[y, x] = True
    big = np.repeat(np.repeat(mask, s, 0), s, 1)
    background = np.array(PALETTE[0], np.uint8)
    assert (ev[~big] == background).all()
    assert (ev[big] != background).any(axis=-1).all()
    # one bin [2, H, W] works the same; the caller's array is untouched
    before = frames.copy()
    one = events_image(frames[3], s)
    assert (one[10 * s, 15 * s] == OFF_COLOUR).all() and (one[2 * s, 3 * s] == PALETTE[0]).all()
    np.testing.assert_array_equal(frames, before)


def test_decided_label_is_drawn_in_the_banner() -> None:
    frames = np.zeros((2, 32, 32), np.float32)
    banners = {}
    for key, dec in (("4", labelled(4)), ("7", labelled(7)), ("none", no_gesture())):
        img = render_overlay(frames, dec, STATS, 4)
        banners[key] = img[:BANNER_H, : img.shape[1] - 100]  # leave out the confidence tag
    assert not np.array_equal(banners["4"], banners["7"])
    assert not np.array_equal(banners["4"], banners["none"])
    assert not np.array_equal(banners["7"], banners["none"])
    accent = np.array(ACCENT, np.uint8)
    assert (banners["4"] == accent).all(axis=-1).sum() > 200  # the class name, in the accent
    assert not (banners["none"] == accent).all(axis=-1).any()  # "no gesture" is not


def test_label_text_matches_putText_rendering() -> None:
    """The banner holds the class name as cv2.putText draws it (at the size it was fitted to)."""
    dec = labelled(0)  # "hand clap", short enough to keep the full size
    img = render_overlay(np.zeros((2, 128, 128), np.float32), dec, STATS, 4)
    blank = np.zeros_like(img[:BANNER_H])
    blank[:] = PALETTE[0]
    cv2.putText(
        blank,
        "hand clap",
        (10, BANNER_H // 2 + 12),
        cv2.FONT_HERSHEY_SIMPLEX,
        1.1,
        ACCENT,
        2,
        cv2.LINE_AA,
    )
    region = (slice(0, BANNER_H - 2), slice(0, 300))
    np.testing.assert_array_equal(img[region], blank[region])


def test_bars_are_ordered_like_probabilities_and_decided_one_highlighted() -> None:
    logits = np.log(np.array([5, 9, 2, 7, 30, 4, 6, 3, 8, 10, 11], float))
    dec = decision_for(logits)
    assert dec.label == 4
    h, w, s = 64, 64, 4
    img = render_overlay(np.zeros((2, h, w), np.float32), dec, STATS, s)
    panel = img[BANNER_H:, w * s :]
    is_bar = (panel == np.array(BAR, np.uint8)).all(-1) | (panel == np.array(ACCENT, np.uint8)).all(
        -1
    )
    per_row = is_bar.sum(axis=1)
    # bands of consecutive rows holding bar pixels, top to bottom = class order
    rows = np.flatnonzero(per_row)
    bands = np.split(rows, np.flatnonzero(np.diff(rows) > 1) + 1)
    assert len(bands) == 11
    lengths = np.array([per_row[b].max() for b in bands])
    assert list(np.argsort(lengths, kind="stable")) == list(np.argsort(dec.probs, kind="stable"))
    assert len(set(lengths.tolist())) == 11
    accent_rows = [
        i for i, b in enumerate(bands) if (panel[b] == np.array(ACCENT, np.uint8)).all(-1).any()
    ]
    assert accent_rows == [4]


def test_stats_and_pause_change_the_panel() -> None:
    frames = np.zeros((2, 32, 32), np.float32)
    a = render_overlay(frames, None, OverlayStats(fps=10.0), 4)
    b = render_overlay(frames, None, OverlayStats(fps=99.0), 4)
    c = render_overlay(frames, None, OverlayStats(fps=10.0, dropped_windows=5), 4)
    p = render_overlay(frames, None, OverlayStats(fps=10.0, paused=True), 4)
    assert not np.array_equal(a, b) and not np.array_equal(a, c)
    assert not np.array_equal(
        a[BANNER_H : BANNER_H + 128, :128], p[BANNER_H : BANNER_H + 128, :128]
    )
    many = OverlayStats(stage_ms={f"stage{i}": float(i) for i in range(9)}, source="x" * 300)
    assert render_overlay(frames, None, many, 4).shape == a.shape


def test_dropped_display_frames_have_their_own_row_below_dropped_windows() -> None:
    """issue 12: a slow display drops display frames; the panel counts them apart from
    the engine's dropped windows, on the next row, in the warning colour when not 0."""
    from smastream.stream.overlay import ROW_H, WARN

    frames = np.zeros((2, 32, 32), np.float32)
    a = render_overlay(frames, None, OverlayStats(), 4)
    frames_17 = render_overlay(frames, None, OverlayStats(dropped_frames=17), 4)
    windows_17 = render_overlay(frames, None, OverlayStats(dropped_windows=17), 4)
    by_frames = (a != frames_17).any(axis=-1)
    by_windows = (a != windows_17).any(axis=-1)
    assert by_frames.any() and by_windows.any()
    assert not by_frames[:, :128].any()  # the panel only, not the events
    # the same "17" drawn one row lower
    np.testing.assert_array_equal(by_frames[ROW_H:], by_windows[:-ROW_H])
    assert (frames_17[by_frames] == WARN).all(axis=-1).any()


def test_bad_input_rejected() -> None:
    with pytest.raises(ValueError, match=r"expected \[2, H, W\]"):
        render_overlay(np.zeros((3, 8, 8)), None, STATS, 2)
    with pytest.raises(ValueError, match="scale=0"):
        render_overlay(np.zeros((2, 8, 8)), None, STATS, 0)
    with pytest.raises(ValueError, match="10 short names"):
        render_overlay(np.zeros((2, 8, 8)), labelled(1), STATS, 2, short_names=["a"] * 10)


def test_video_sink_writes_a_readable_mp4(tmp_path: Path) -> None:
    h, w, s = 32, 32, 4
    size = overlay_size(h, w, s)
    path = tmp_path / "out.mp4"
    rng = np.random.default_rng(0)
    n = 12
    with VideoSink(path, size, fps=25.0) as sink:
        for i in range(n):
            frames = (rng.random((2, h, w)) < 0.1).astype(np.float32)
            sink.write(render_overlay(frames, labelled(i % 11), STATS, s))
        with pytest.raises(ValueError, match="expected"):
            sink.write(np.zeros((10, 10, 3), np.uint8))
    assert sink.frames_written == n
    with pytest.raises(SmastreamError, match="closed"):
        sink.write(np.zeros((*size, 3), np.uint8))
    cap = cv2.VideoCapture(str(path))
    try:
        assert cap.isOpened()
        read = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            assert frame.shape == (*size, 3)
            read += 1
    finally:
        cap.release()
    assert read == n


def test_video_sink_cannot_open_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(SmastreamError, match="cannot open video file") as info:
        VideoSink(tmp_path / "missing" / "out.mp4", (100, 100))
    assert "\n" not in str(info.value)


linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the X11 check only runs on Linux"
)


@linux_only
def test_has_display_false_without_display() -> None:
    assert has_display({"PATH": "/usr/bin:/bin"}) is False
    assert has_display({"WAYLAND_DISPLAY": "wayland-0"}) is False  # Qt here is xcb only
    assert has_display({"DISPLAY": "not a display"}) is False


@linux_only
def test_has_display_false_for_a_server_that_does_not_exist() -> None:
    assert has_display({"DISPLAY": ":4243"}) is False
    # TCP display 127.0.0.1:4243 -> port 10243, where nothing listens
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 6000 + 4243)) == 0:
            pytest.skip("something listens on port 10243")
    assert has_display({"DISPLAY": "127.0.0.1:4243"}) is False


@linux_only
def test_has_display_needs_a_real_x_server_behind_the_socket() -> None:
    """A socket that accepts but is not an X server: reachable, but xdpyinfo says no."""
    n = 4000 + (hash(str(Path.cwd())) % 900)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as srv:
        srv.bind(f"\0/tmp/.X11-unix/X{n}")
        srv.listen(4)
        # without xdpyinfo on PATH the socket answering is all we can check
        assert has_display({"DISPLAY": f":{n}", "PATH": "/nonexistent"}) is True
        if shutil.which("xdpyinfo") is None:
            pytest.skip("xdpyinfo not installed")
        assert has_display({"DISPLAY": f":{n}"}, timeout_s=0.25) is False

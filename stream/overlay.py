"""The OpenCV overlay: events in two colours, the decided gesture, confidence bars, stats.

Layout (BGR, fixed size for a given input size, scale and number of classes — see
:func:`overlay_size` — so a video writer can be opened before the first frame)::

    +--------------------------------------------------------------+
    | decided gesture in large text                    (banner)    |
    +---------------------------------+----------------------------+
    |                                 | confidence                 |
    |  events, nearest-neighbour      |  clap      ####-----  0.41 |
    |  upscaled by an integer scale:  |  R wave    #--------  0.05 |
    |  ON yellow, OFF blue, both      |  ...  (decided: green)     |
    |  white, none dark               | fps, source                |
    |                                 | latency per stage, ms      |
    |                                 | dropped windows, frames,   |
    |                                 | lost packets               |
    +---------------------------------+----------------------------+

The static parts of the panel are drawn once per layout and cached; a frame copies them and
draws the rest. Frames follow the binner's layout: channel 0 = OFF, channel 1 = ON.

:class:`VideoSink` writes frames to an ``mp4v`` file (H.264 is not in the PyPI OpenCV
build). :func:`has_display` says whether ``cv2.imshow`` can be called: without a reachable
X server, opencv-python's Qt backend aborts the whole process.
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from smastream.errors import SmastreamError
from smastream.gestures import CLASS_NAMES, NO_GESTURE
from smastream.stream.decision import Decision

Image = npt.NDArray[np.uint8]

# Colours, BGR.
BACKGROUND = (22, 18, 16)
PANEL = (40, 34, 30)
OFF_COLOUR = (255, 150, 40)
ON_COLOUR = (70, 225, 255)
BOTH_COLOUR = (235, 235, 235)
TEXT = (230, 230, 230)
DIM = (150, 150, 150)
ACCENT = (90, 225, 90)
BAR = (175, 125, 75)
BAR_TRACK = (62, 54, 48)
WARN = (60, 90, 240)

PALETTE = np.array([BACKGROUND, OFF_COLOUR, ON_COLOUR, BOTH_COLOUR], dtype=np.uint8)
"""Pixel colour by ``2 * (ON > 0) + (OFF > 0)``: none, OFF only, ON only, both."""

SHORT_NAMES: tuple[str, ...] = (
    "clap",
    "R wave",
    "L wave",
    "R arm cw",
    "R arm ccw",
    "L arm cw",
    "L arm ccw",
    "arm roll",
    "drums",
    "guitar",
    "other",
)
"""Bar labels for :data:`smastream.gestures.CLASS_NAMES`, in the same order."""


def short_names_for(class_names: Sequence[str]) -> tuple[str, ...]:
    """Bar labels for a model's classes: the short DVS Gesture names where they apply
    (a 12th "no gesture" output becomes "none"), other names cut to 10 characters."""
    short = dict(zip(CLASS_NAMES, SHORT_NAMES, strict=True))
    short["no gesture"] = "none"
    return tuple(short.get(name, name[:10]) for name in class_names)


FONT = cv2.FONT_HERSHEY_SIMPLEX
BANNER_H = 56
PANEL_W = 300
ROW_H = 20
SMALL = 0.45
MAX_STAGES = 5
_PAD = 10
_NAME_W = 88
_BAR_W = 150
_BAR_H = 12
_TAG_W = 90  # room kept right of the title for the confidence tag


def _panel_rows(n_classes: int) -> dict[str, int]:
    """Baseline y of each panel row, relative to the top of the panel."""
    y = _PAD + 12
    rows = {"conf_header": y}
    y += ROW_H
    rows["bars"] = y  # first bar row; row i at bars + i * ROW_H
    y += n_classes * ROW_H + 8
    rows["fps"] = y
    rows["source"] = y + ROW_H
    rows["lat_header"] = y + 2 * ROW_H + 6
    rows["stages"] = y + 3 * ROW_H + 6  # up to MAX_STAGES rows, then the decision row
    y = rows["stages"] + (MAX_STAGES + 1) * ROW_H + 6
    rows["dropped"] = y
    rows["dropped_frames"] = y + ROW_H
    rows["lost"] = y + 2 * ROW_H
    rows["height"] = y + 2 * ROW_H + _PAD
    return rows


_panel_rows_cached = functools.lru_cache(maxsize=8)(_panel_rows)


def overlay_size(h: int, w: int, scale: int, n_classes: int = len(CLASS_NAMES)) -> tuple[int, int]:
    """Output ``(height, width)`` of :func:`render_overlay` for ``h x w`` frames.

    ``height = BANNER_H + max(h * scale, panel height)``, ``width = w * scale + PANEL_W``.
    """
    _check_scale(scale)
    if h < 1 or w < 1:
        raise ValueError(f"frame size {h}x{w}: both sides must be >= 1")
    panel_h = _panel_rows(n_classes)["height"]
    return BANNER_H + max(h * scale, panel_h), w * scale + PANEL_W


def auto_scale(h: int, w: int, target_px: int = 512) -> int:
    """The integer scale that brings the longer side closest to ``target_px`` from below
    (at least 1): 128x128 -> 4, 64x64 -> 8, 346x260 -> 1."""
    return max(1, target_px // max(h, w))


@dataclass(frozen=True)
class OverlayStats:
    """Pipeline numbers shown in the panel.

    Attributes:
        fps: Frames (windows) shown per second.
        stage_ms: Latency per stage in ms, in display order (the first ``MAX_STAGES``).
        dropped_windows: Stale windows dropped by a slow consumer.
        dropped_frames: Display frames dropped because the display was slower than
            the display rate (engine steps are never dropped for the display).
        lost_packets: Transport packets lost (sequence gaps).
        paused: Replay paused: a "PAUSED" tag is drawn over the events.
        source: Name of the source (camera, file), shortened to fit.
    """

    fps: float = 0.0
    stage_ms: Mapping[str, float] = field(default_factory=dict)
    dropped_windows: int = 0
    dropped_frames: int = 0
    lost_packets: int = 0
    paused: bool = False
    source: str = ""


def _check_scale(scale: int) -> None:
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"scale={scale!r}: must be an integer >= 1")


def _polarity_masks(frames: npt.NDArray[np.generic]) -> tuple[np.ndarray, np.ndarray]:
    """``(off, on)`` boolean ``[H, W]`` masks from ``[2, H, W]`` or ``[S, 2, H, W]``."""
    a = np.asarray(frames)
    if a.ndim == 3 and a.shape[0] == 2:
        return np.asarray(a[0] > 0), np.asarray(a[1] > 0)
    if a.ndim == 4 and a.shape[1] == 2:
        m = a.max(axis=0) > 0 if a.shape[0] else np.zeros(a.shape[1:], dtype=bool)
        return m[0], m[1]
    raise ValueError(
        f"frames shape {a.shape}: expected [2, H, W] (one bin) or [S, 2, H, W] (a window), "
        "channel 0 = OFF, 1 = ON"
    )


def events_image(frames: npt.NDArray[np.generic], scale: int) -> Image:
    """Colour the events and upscale them by ``scale`` (nearest neighbour).

    A window ``[S, 2, H, W]`` is summed over ``S``. Colours: :data:`PALETTE`.

    Shapes:
        frames: ``[2, H, W]`` or ``[S, 2, H, W]`` counts, channel 0 = OFF, 1 = ON.
        returns: ``[H * scale, W * scale, 3]`` uint8 BGR.
    """
    _check_scale(scale)
    off, on = _polarity_masks(frames)
    idx = on.view(np.uint8) * np.uint8(2) + off.view(np.uint8)
    small: Image = np.take(PALETTE, idx, axis=0)
    if scale == 1:
        return small
    h, w = idx.shape
    big = cv2.resize(small, (w * scale, h * scale), interpolation=cv2.INTER_NEAREST)
    return np.asarray(big, dtype=np.uint8)


def _text(
    img: Image,
    s: str,
    x: int,
    y: int,
    colour: tuple[int, int, int],
    size: float = SMALL,
    thick: int = 1,
) -> None:
    cv2.putText(img, s, (x, y), FONT, size, colour, thick, cv2.LINE_AA)


@functools.lru_cache(maxsize=1024)
def _text_width(s: str, size: float = SMALL, thick: int = 1) -> int:
    return int(cv2.getTextSize(s, FONT, size, thick)[0][0])


def _text_right(img: Image, s: str, x_right: int, y: int, colour: tuple[int, int, int]) -> None:
    _text(img, s, x_right - _text_width(s), y, colour)


def _ascii(s: str) -> str:
    return s.encode("ascii", "replace").decode("ascii")


@functools.lru_cache(maxsize=64)
def _fit(s: str, max_w: int, size: float = SMALL) -> str:
    """``s`` shortened from the left with ``...`` until it fits ``max_w`` pixels."""
    s = _ascii(s)
    if cv2.getTextSize(s, FONT, size, 1)[0][0] <= max_w:
        return s
    while len(s) > 1 and cv2.getTextSize("..." + s, FONT, size, 1)[0][0] > max_w:
        s = s[1:]
    return "..." + s


@functools.lru_cache(maxsize=8)
def _background(h: int, w: int, scale: int, short_names: tuple[str, ...]) -> Image:
    """The static part of a frame: background, panel, class names, section headers."""
    out_h, out_w = overlay_size(h, w, scale, len(short_names))
    img = np.empty((out_h, out_w, 3), dtype=np.uint8)
    img[:] = BACKGROUND
    x0 = w * scale
    img[BANNER_H:, x0:] = PANEL
    img[BANNER_H - 2 : BANNER_H, :] = BAR_TRACK
    img[BANNER_H:, x0 : x0 + 2] = BAR_TRACK
    rows = _panel_rows(len(short_names))
    top = BANNER_H
    _text(img, "confidence", x0 + _PAD, top + rows["conf_header"], DIM)
    for i, name in enumerate(short_names):
        y = top + rows["bars"] + i * ROW_H
        _text(img, _ascii(name), x0 + _PAD, y, DIM)
        bx = x0 + _PAD + _NAME_W
        cv2.rectangle(img, (bx, y - _BAR_H + 2), (bx + _BAR_W, y + 1), BAR_TRACK, -1)
    _text(img, "latency, ms", x0 + _PAD, top + rows["lat_header"], DIM)
    _text(img, "dropped windows", x0 + _PAD, top + rows["dropped"], DIM)
    _text(img, "dropped frames", x0 + _PAD, top + rows["dropped_frames"], DIM)
    _text(img, "lost packets", x0 + _PAD, top + rows["lost"], DIM)
    img.setflags(write=False)
    return img


@functools.lru_cache(maxsize=64)
def _banner(title: str, colour: tuple[int, int, int], width: int) -> Image:
    """The banner strip with ``title`` in large text, shrunk to leave room for the tag."""
    img = np.empty((BANNER_H - 2, width, 3), dtype=np.uint8)
    img[:] = BACKGROUND
    title = _ascii(title)
    avail = width - 3 * _PAD - _TAG_W
    size = 1.1
    tw = _text_width(title, size, 2)
    if tw > avail:
        size *= avail / tw
    cv2.putText(img, title, (_PAD, BANNER_H // 2 + 12), FONT, size, colour, 2, cv2.LINE_AA)
    img.setflags(write=False)
    return img


def sensor_frame(events: npt.NDArray[Any], sensor_size: tuple[int, int]) -> Image:
    """Polarity masks of raw events at full sensor resolution, for :func:`render_overlay`.

    Shapes:
        events: 1-D event array (fields ``x``, ``y``, ``p``; p = 1 ON).
        returns: ``uint8 [2, H, W]`` (channel 0 = OFF, 1 = ON), ``(W, H) = sensor_size``;
        events outside the sensor are left out.
    """
    w, h = sensor_size
    out = np.zeros((2, h, w), dtype=np.uint8)
    if len(events):
        x = events["x"].astype(np.intp)
        y = events["y"].astype(np.intp)
        keep = (x < w) & (y < h)
        out[(events["p"][keep] > 0).astype(np.intp), y[keep], x[keep]] = 1
    return out


def render_overlay(
    frames: npt.NDArray[np.generic],
    decision: Decision | None,
    stats: OverlayStats,
    scale: int = 4,
    short_names: Sequence[str] = SHORT_NAMES,
    crop: tuple[int, int, int, int] | None = None,
) -> Image:
    """Draw one overlay frame.

    Args:
        frames: The events to show: one bin ``[2, H, W]`` or a window ``[S, 2, H, W]``
            (summed over ``S``), channel 0 = OFF, 1 = ON.
        decision: The latest decision; ``None`` before the first one ("waiting for events").
        stats: FPS, per-stage latency, counters.
        scale: Integer upscale of the events (:func:`auto_scale` picks one).
        short_names: Bar labels, one per class (``len(decision.probs)`` of them).
        crop: ``(x, y, w, h)`` of the model's crop in ``frames`` pixels, drawn as a
            rectangle (None: the model sees all of it, nothing drawn).

    Returns:
        ``[H_out, W_out, 3]`` uint8 BGR, ``(H_out, W_out) = overlay_size(H, W, scale,
        len(short_names))``.

    Raises:
        ValueError: bad frame shape or scale, or a decision whose number of classes is not
            ``len(short_names)``.
    """
    ev = events_image(frames, scale)
    hs, ws = ev.shape[:2]
    names = tuple(short_names)
    if decision is not None and len(decision.probs) != len(names):
        raise ValueError(
            f"decision has {len(decision.probs)} classes but {len(names)} short names were given"
        )
    img = _background(hs // scale, ws // scale, scale, names).copy()
    img[BANNER_H : BANNER_H + hs, :ws] = ev
    if crop is not None:
        cx, cy, cw, ch = (int(v) * scale for v in crop)
        y0 = BANNER_H + cy
        cv2.rectangle(img, (cx, y0), (cx + cw - 1, y0 + ch - 1), ACCENT, 1)
    x0 = ws
    top = BANNER_H
    rows = _panel_rows_cached(len(names))

    # Banner: the decided gesture, large.
    if decision is None:
        title, colour, tag = "waiting for events", DIM, ""
    elif decision.label is None:
        title, colour = NO_GESTURE, DIM
        tag = "quiet" if decision.quiet else f"top {decision.confidence:.2f}"
    else:
        title, colour, tag = decision.name, ACCENT, f"{decision.confidence:.2f}"
    img[: BANNER_H - 2] = _banner(title, colour, img.shape[1])
    if tag:
        tag_w = _text_width(tag, 0.6)
        _text(img, tag, img.shape[1] - _PAD - tag_w, BANNER_H // 2 + 8, DIM, 0.6)

    # Confidence bars.
    if decision is not None:
        bx = x0 + _PAD + _NAME_W
        for i, p in enumerate(decision.probs.tolist()):
            y = top + rows["bars"] + i * ROW_H
            chosen = decision.label == i
            n = round(min(max(p, 0.0), 1.0) * _BAR_W)
            if n > 0:
                cv2.rectangle(
                    img, (bx, y - _BAR_H + 2), (bx + n - 1, y + 1), ACCENT if chosen else BAR, -1
                )
            if chosen:
                _text(img, _ascii(names[i]), x0 + _PAD, y, TEXT)
            if chosen or p >= 0.01:
                _text_right(img, f"{p:.2f}", x0 + PANEL_W - _PAD, y, TEXT if chosen else DIM)

    # Stats.
    _text(img, f"fps {stats.fps:5.1f}", x0 + _PAD, top + rows["fps"], TEXT)
    if stats.source:
        src = _fit(stats.source, PANEL_W - 2 * _PAD - 48)
        _text(img, "src " + src, x0 + _PAD, top + rows["source"], DIM)
    stages = list(stats.stage_ms.items())
    if len(stages) > MAX_STAGES:
        _text_right(
            img,
            f"+{len(stages) - MAX_STAGES} more",
            x0 + PANEL_W - _PAD,
            top + rows["lat_header"],
            DIM,
        )
    latency = decision.latency_ms if decision is not None else None
    shown: list[tuple[str, float]] = stages[:MAX_STAGES]
    if latency is not None:
        shown.append(("window -> decision", latency))
    for i, (name, ms) in enumerate(shown):
        y = top + rows["stages"] + i * ROW_H
        _text(img, _fit(name, PANEL_W - 2 * _PAD - 70), x0 + _PAD + 8, y, TEXT)
        _text_right(img, f"{ms:.2f}", x0 + PANEL_W - _PAD, y, TEXT)
    counters = (
        ("dropped", stats.dropped_windows),
        ("dropped_frames", stats.dropped_frames),
        ("lost", stats.lost_packets),
    )
    for key, value in counters:
        _text_right(img, str(value), x0 + PANEL_W - _PAD, top + rows[key], WARN if value else TEXT)

    if stats.paused:
        cv2.rectangle(img, (6, top + 6), (112, top + 34), BACKGROUND, -1)
        _text(img, "PAUSED", 14, top + 28, WARN, 0.7, 2)
    return img


class VideoSink:
    """Write overlay frames to a video file with ``mp4v`` (MPEG-4 part 2).

    Args:
        path: Output file (``.mp4``); its folder must exist.
        frame_size: ``(height, width)`` of every frame, e.g. :func:`overlay_size`.
        fps: Frame rate written in the file.

    Raises:
        SmastreamError: OpenCV cannot open a writer for this path and size.
    """

    FOURCC = "mp4v"

    def __init__(self, path: str | Path, frame_size: tuple[int, int], fps: float = 30.0) -> None:
        h, w = (int(v) for v in frame_size)
        if h < 1 or w < 1:
            raise ValueError(f"frame_size={frame_size!r}: (height, width) must both be >= 1")
        if not fps > 0:
            raise ValueError(f"fps={fps!r}: must be > 0")
        self.path = Path(path)
        self.frame_size = (h, w)
        self.fps = float(fps)
        self.frames_written = 0
        fourcc = cv2.VideoWriter.fourcc(*self.FOURCC)
        self._writer: cv2.VideoWriter | None = cv2.VideoWriter(
            str(self.path), fourcc, self.fps, (w, h)
        )
        if not self._writer.isOpened():
            self._writer = None
            raise SmastreamError(
                f"cannot open video file {self.path} for writing "
                f"({self.FOURCC}, {w}x{h} at {self.fps:g} fps): check the folder and extension"
            )

    def write(self, frame: Image) -> None:
        """Append one ``[height, width, 3]`` uint8 BGR frame.

        Raises:
            ValueError: wrong shape or dtype (OpenCV would drop the frame silently).
            SmastreamError: the sink is closed.
        """
        if self._writer is None:
            raise SmastreamError(f"video file {self.path} is already closed")
        h, w = self.frame_size
        if frame.shape != (h, w, 3) or frame.dtype != np.uint8:
            raise ValueError(
                f"frame {frame.shape} {frame.dtype}: expected ({h}, {w}, 3) uint8 for {self.path}"
            )
        self._writer.write(frame)
        self.frames_written += 1

    def close(self) -> None:
        """Finish the file; safe to call twice. A video closed before its first frame
        (Ctrl-C at start-up) gets one black frame: an mp4 with none does not open."""
        if self._writer is not None:
            if self.frames_written == 0:
                self.write(np.zeros((*self.frame_size, 3), dtype=np.uint8))
            self._writer.release()
            self._writer = None
            # OpenCV's write() reports nothing (FFmpeg only warns): a full disk leaves a
            # file without its index. Check that the finished file opens.
            check = cv2.VideoCapture(str(self.path))
            try:
                ok = check.isOpened() and check.read()[0]
            finally:
                check.release()
            if not ok:
                raise SmastreamError(
                    f"{self.path}: cannot write the video: the finished file does not open "
                    "(disk full?)"
                )

    def __enter__(self) -> VideoSink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _x_display_address(display: str) -> tuple[str, int] | None:
    """``":0.0"`` -> ``("", 0)``, ``"localhost:10.0"`` -> ``("localhost", 10)``; ``None`` if
    malformed."""
    host, sep, rest = display.rpartition(":")
    number = rest.split(".", 1)[0]
    if not sep or not number.isdigit():
        return None
    return host, int(number)


def _connects(family: int, address: str | bytes | tuple[str, int], timeout_s: float) -> bool:
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(timeout_s)
            s.connect(address)
        return True
    except OSError:
        return False


def has_display(env: Mapping[str, str] | None = None, timeout_s: float = 0.5) -> bool:
    """Whether ``cv2.imshow`` can open a window without killing the process.

    On Linux opencv-python draws through Qt's xcb (X11) plugin only, so an X server must
    answer at ``$DISPLAY`` (under Wayland that is XWayland; ``WAYLAND_DISPLAY`` alone is
    not enough). The check connects to the server's socket (``/tmp/.X11-unix/X<n>``, the
    abstract socket of the same name, or TCP ``6000 + n`` for ``host:n``) and, when
    ``xdpyinfo`` is installed, runs it to confirm that the server accepts us (X
    authority). No window is created. On macOS and Windows it returns ``True``.

    Args:
        env: Environment to read (default ``os.environ``).
        timeout_s: Connection timeout; ``xdpyinfo`` gets four times as long.
    """
    if sys.platform in ("darwin", "win32"):
        return True
    env = os.environ if env is None else env
    display = env.get("DISPLAY", "").strip()
    if not display:
        return False
    addr = _x_display_address(display)
    if addr is None:
        return False
    host, n = addr
    if host in ("", "unix") or host.startswith("/"):
        path = f"/tmp/.X11-unix/X{n}"
        ok = _connects(socket.AF_UNIX, "\0" + path, timeout_s) or _connects(
            socket.AF_UNIX, path, timeout_s
        )
    else:
        ok = _connects(socket.AF_INET, (host, 6000 + n), timeout_s)
    if not ok:
        return False
    xdpyinfo = shutil.which("xdpyinfo", path=env.get("PATH"))
    if xdpyinfo is None:
        return True
    try:
        r = subprocess.run(
            [xdpyinfo, "-display", display],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=4 * timeout_s,
            env={**os.environ, **env},
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0

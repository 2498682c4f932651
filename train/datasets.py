"""Training data: labelled recordings, the ``clip`` and ``stream`` protocols, an on-disk cache.

Recordings
    A :class:`Recording` is an event file (AEDAT 4, 3.1 or 2.0, sniffed from its header)
    and its DVS Gesture label CSV ``<name>_labels.csv`` beside it.
    :func:`find_labelled_recordings` lists the labelled recordings of a folder (files
    without labels are skipped and reported); :func:`make_synthetic_recordings` writes
    synthetic ones through the same writers, so they flow through the same path.

Two protocols, both built on :mod:`smastream.stream.binning` (no train/serve skew):

``clip`` (the paper's, :class:`ClipDataset`)
    Every labelled gesture window is one sample: the events with
    ``start_us <= t < end_us`` (in file order) become ``T`` equal-event-count frames
    (:func:`~smastream.stream.binning.equal_count_frames`), label = the class. Repeated
    classes and overlapping windows are kept as they are (each window is a sample;
    overlapping windows share events) and reported.

``stream`` (the product's, :class:`StreamDataset`, :class:`StreamBatcher`)
    A whole recording is cut into fixed time bins of ``bin_us`` exactly as the live
    :class:`~smastream.stream.binning.Binner` does (first edge = first event's ``t``
    rounded down to a multiple of ``bin_us``; last bin = the one holding the last event),
    then into consecutive chunks of ``chunk_steps`` bins for truncated BPTT with the
    network state carried from one chunk to the next of the same recording. Every step
    has a target (:func:`step_targets`): a class 0..10, or :data:`NO_GESTURE` (11) for
    bins between gestures. The last chunk is padded; padded steps have ``mask`` False and
    target :data:`PAD_TARGET` (-100, torch's default ``ignore_index``).

Target rules (:func:`step_targets`; bin ``k`` covers ``[a, b) = [t0 + k*bin, t0 + (k+1)*bin)``)
    ``"end"`` (default, causal like the live decision): the class of the window that
    contains the bin's last microsecond ``b - 1``. ``"majority"``: the class whose windows
    cover more than half of the bin (union of that class's windows). Overlapping windows
    of different classes: the window that started *later* wins (the newer gesture has
    begun; ties in start go to the later row of the file). No window: :data:`NO_GESTURE`.

Cache
    Preprocessing writes one entry per recording, protocol and parameters into
    ``cache_dir``: a folder ``<name>-<protocol>-<key>`` holding the raw ``float32`` frames,
    the targets and a ``meta.json``. The key hashes the resolved paths, sizes and mtimes of
    the event and label files and every binning parameter (not ``chunk_steps``, which is
    applied when loading). An entry is written in a hidden temporary folder and renamed
    into place when complete, so an interrupted run never leaves a complete-looking entry.
    Frames are memory-mapped on first access: the dataset is never all in memory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import platform
import shutil
import sys
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import Dataset

from smastream.errors import FormatError, SmastreamError
from smastream.gestures import NO_GESTURE_INDEX, NUM_CLASSES
from smastream.stream.binning import (
    BinCounts,
    Binner,
    equal_count_frames,
    frame_geometry,
)
from smastream.stream.events import EVENT_DTYPE, Events
from smastream.stream.events import sensor_size as resolve_sensor_size
from smastream.stream.formats import DEFAULT_CHUNK_EVENTS, open_events, open_writer, sniff_format
from smastream.stream.formats.labels import (
    GestureWindow,
    Labels,
    labels_path_for,
    read_labels,
    scenes_path_for,
    write_labels,
    write_scenes,
)

__all__ = [
    "NO_GESTURE",
    "PAD_TARGET",
    "TARGET_RULES",
    "ClipConfig",
    "ClipDataset",
    "DatasetReport",
    "Recording",
    "RecordingScan",
    "StreamBatch",
    "StreamBatcher",
    "StreamChunk",
    "StreamConfig",
    "StreamDataset",
    "StreamPrefetcher",
    "check_label_span",
    "find_labelled_recordings",
    "make_synthetic_recordings",
    "scan_recordings",
    "step_targets",
]

log = logging.getLogger(__name__)

NO_GESTURE = NO_GESTURE_INDEX
"""Stream target of a bin outside every gesture window (11; smastream.gestures)."""
PAD_TARGET = -100
"""Stream target of a padding step after the end of a recording (torch's ignore_index)."""
TARGET_RULES = ("end", "majority")
"""Valid ``target_rule`` values, see :func:`step_targets`."""

CACHE_VERSION = 1
_BLOCK_BYTES = 8 << 20  # bins binned per Binner window while preprocessing a stream
_TMP_PREFIX = ".tmp-"


# --------------------------------------------------------------------------- recordings


@dataclass(frozen=True)
class Recording:
    """A labelled recording: an event file and its label CSV.

    Attributes:
        events: The event file (any format :func:`~smastream.stream.formats.open_events`
            reads).
        labels: Its DVS Gesture label CSV.
    """

    events: Path
    labels: Path

    @property
    def name(self) -> str:
        """The event file's name without its extension (``user01_natural``)."""
        return self.events.stem


@dataclass
class RecordingScan:
    """What :func:`scan_recordings` found in a folder.

    Attributes:
        recordings: Event files with a label file, sorted by name.
        unlabelled: Event files without ``<name>_labels.csv`` (skipped).
        other_files: Files that are neither event files nor label files (ignored).
    """

    recordings: list[Recording] = field(default_factory=list)
    unlabelled: list[Path] = field(default_factory=list)
    other_files: list[Path] = field(default_factory=list)


def _first_event_at_or_after(path: Path, t_us: int | None) -> int | None:
    """Timestamp of the first event of ``path`` (at or after ``t_us``), or ``None``."""
    with open_events(path) as reader:
        if t_us is not None:
            reader.seek(t_us)
        for packet in reader:
            if len(packet):
                return int(packet["t"][0])
    return None


def check_label_span(recording: Recording, labels: Labels | None = None) -> None:
    """Check that every label window lies inside the recording's time span.

    Cheap: reads the first packet for the first timestamp, then seeks to the latest
    window end and reads one packet (no full decode).

    Raises:
        FormatError: naming the event file, when the recording has no events, a window
            starts before the first event, or no event reaches the end of the latest
            window.
    """
    labels = read_labels(recording.labels) if labels is None else labels
    if not labels.windows:
        return
    first = _first_event_at_or_after(recording.events, None)
    if first is None:
        raise FormatError(recording.events, None, "no events, but the label file has windows")
    early = min(labels.windows, key=lambda w: w.start_us)
    if early.start_us < first:
        raise FormatError(
            recording.events,
            None,
            f"label window {early.name!r} {early.start_us}..{early.end_us} us in "
            f"{recording.labels.name} starts before the first event (t = {first} us)",
        )
    late = max(labels.windows, key=lambda w: w.end_us)
    if _first_event_at_or_after(recording.events, late.end_us - 1) is None:
        raise FormatError(
            recording.events,
            None,
            f"label window {late.name!r} {late.start_us}..{late.end_us} us in "
            f"{recording.labels.name} ends after the last event (no event at or after "
            f"t = {late.end_us - 1} us)",
        )


def scan_recordings(folder: str | Path, *, check_span: bool = True) -> RecordingScan:
    """List the event files of ``folder`` (not recursive) and pair them with labels.

    Event files are recognised by their header (:func:`sniff_format`), whatever their
    extension; ``*_labels.csv`` files are label files; anything else is listed in
    ``other_files``.

    Args:
        folder: The folder.
        check_span: Also check every label file parses and its windows lie inside its
            recording (:func:`check_label_span`).

    Raises:
        SmastreamError: ``folder`` is not a folder.
        FormatError: a bad label file or a window outside its recording (names the file).
    """
    root = Path(folder)
    if not root.is_dir():
        raise SmastreamError(f"{root}: not a folder of recordings")
    scan = RecordingScan()
    for path in sorted(p for p in root.iterdir() if p.is_file()):
        if path.name.endswith("_labels.csv") or path.name.startswith("."):
            continue
        try:
            sniff_format(path)
        except FormatError:
            scan.other_files.append(path)
            continue
        labels = labels_path_for(path)
        if not labels.is_file():
            scan.unlabelled.append(path)
            continue
        rec = Recording(path, labels)
        if check_span:
            check_label_span(rec)
        scan.recordings.append(rec)
    return scan


def find_labelled_recordings(folder: str | Path, *, check_span: bool = True) -> list[Recording]:
    """The labelled recordings of ``folder``; unlabelled event files are logged and skipped.

    See :func:`scan_recordings` for the arguments and errors.
    """
    scan = scan_recordings(folder, check_span=check_span)
    if scan.unlabelled:
        names = ", ".join(p.name for p in scan.unlabelled)
        log.warning(
            "%s: skipped %d event file(s) without a _labels.csv: %s",
            folder,
            len(scan.unlabelled),
            names,
        )
    return scan.recordings


# --------------------------------------------------------------------------- targets


def _check_rule(rule: str) -> str:
    if rule not in TARGET_RULES:
        raise ValueError(f"target_rule must be one of {TARGET_RULES}, got {rule!r}")
    return rule


def step_targets(
    windows: Sequence[GestureWindow],
    t0_us: int,
    bin_us: int,
    n_bins: int,
    rule: str = "end",
) -> npt.NDArray[np.int64]:
    """Per-bin targets of a stream: a class 0..10 or :data:`NO_GESTURE`.

    Bin ``k`` covers ``[a, b) = [t0_us + k*bin_us, t0_us + (k+1)*bin_us)``.

    * ``"end"``: the class of the window with ``start <= b - 1 < end``.
    * ``"majority"``: the class whose windows (their union) cover more than ``bin_us / 2``
      of the bin.

    Where windows of different classes qualify (overlapping windows), the one with the
    later start wins; equal starts go to the later window in ``windows`` order.

    Args:
        windows: Gesture windows in file order.
        t0_us, bin_us, n_bins: The bins.
        rule: ``"end"`` or ``"majority"``.

    Returns:
        ``int64[n_bins]``.
    """
    rule = _check_rule(rule)
    if bin_us <= 0 or n_bins < 0:
        raise ValueError(f"need bin_us > 0 and n_bins >= 0, got {bin_us!r}, {n_bins!r}")
    targets = np.full(n_bins, NO_GESTURE, dtype=np.int64)
    # Later start (then later row) wins: paint in that order, later paint on top.
    order = sorted(range(len(windows)), key=lambda i: (windows[i].start_us, i))
    a = t0_us + np.arange(n_bins, dtype=np.int64) * bin_us
    if rule == "end":
        last = a + bin_us - 1
        for i in order:
            w = windows[i]
            targets[(last >= w.start_us) & (last < w.end_us)] = w.label
        return targets
    # majority: union coverage per class, then paint qualifying classes by latest start.
    b = a + bin_us
    covered = np.zeros((NUM_CLASSES, n_bins), dtype=np.int64)
    for cls in range(NUM_CLASSES):
        spans = sorted((w.start_us, w.end_us) for w in windows if w.label == cls)
        merged: list[list[int]] = []
        for s, e in spans:
            if merged and s <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], e)
            else:
                merged.append([s, e])
        for s, e in merged:
            covered[cls] += np.clip(np.minimum(b, e) - np.maximum(a, s), 0, None)
    wins = 2 * covered > bin_us
    for i in order:
        w = windows[i]
        overlaps = (a < w.end_us) & (b > w.start_us)
        targets[overlaps & wins[w.label]] = w.label
    return targets


# --------------------------------------------------------------------------- configs


def _norm_pair(name: str, value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return resolve_sensor_size(value)
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"{name} must be (width, height), got {value!r}")
    return int(value[0]), int(value[1])


@dataclass(frozen=True)
class _Geometry:
    """Spatial options shared by both protocols (see :func:`frame_geometry`)."""

    sensor_size: tuple[int, int] | None = None
    crop: tuple[int, int, int, int] | None = None
    downsample: int = 1
    output_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "sensor_size", _norm_pair("sensor_size", self.sensor_size))
        object.__setattr__(self, "output_size", _norm_pair("output_size", self.output_size))
        if self.crop is not None:
            if len(self.crop) != 4:
                raise ValueError(f"crop must be (x0, y0, width, height), got {self.crop!r}")
            object.__setattr__(self, "crop", tuple(int(v) for v in self.crop))
        if self.sensor_size is not None:  # validate now rather than per file
            self.geometry(self.sensor_size)

    def geometry_kwargs(self) -> dict[str, Any]:
        return {"crop": self.crop, "downsample": self.downsample, "output_size": self.output_size}

    def geometry(self, size: tuple[int, int]) -> Any:
        return frame_geometry(size, **self.geometry_kwargs())

    def resolve_size(self, reader_size: tuple[int, int] | None, path: Path) -> tuple[int, int]:
        if self.sensor_size is not None:
            return self.sensor_size
        if reader_size is None:
            raise SmastreamError(
                f"{path}: the file does not say its sensor size: pass sensor_size=(W, H)"
            )
        return (int(reader_size[0]), int(reader_size[1]))


@dataclass(frozen=True)
class ClipConfig(_Geometry):
    """Parameters of the ``clip`` protocol.

    Attributes:
        n_frames: ``T``, equal-event-count frames per clip.
        sensor_size: ``(W, H)`` or a sensor name; ``None`` takes it from each file.
        crop, downsample, output_size: Spatial mapping, see :func:`frame_geometry`.
    """

    n_frames: int = 16

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.n_frames, bool) or not isinstance(self.n_frames, int):
            raise ValueError(f"n_frames must be an integer >= 1, got {self.n_frames!r}")
        if self.n_frames < 1:
            raise ValueError(f"n_frames must be an integer >= 1, got {self.n_frames!r}")


@dataclass(frozen=True)
class StreamConfig(_Geometry):
    """Parameters of the ``stream`` protocol.

    Attributes:
        bin_us: Time bin width, µs.
        chunk_steps: Bins per chunk (one truncated-BPTT segment). Applied when loading:
            changing it does not invalidate the cache.
        target_rule: ``"end"`` or ``"majority"``, see :func:`step_targets`.
        sensor_size, crop, downsample, output_size: As in :class:`ClipConfig`.
        augment_seed: ``None``: the recordings as they are. Else an augmented copy
            (:func:`smastream.train.augment.augment_events`, seeded by this and the
            recording's name) is binned; each seed is its own cache entry.
    """

    bin_us: int = 50_000
    chunk_steps: int = 16
    target_rule: str = "end"
    augment_seed: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("bin_us", "chunk_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        _check_rule(self.target_rule)
        if self.augment_seed is not None and (
            isinstance(self.augment_seed, bool) or not isinstance(self.augment_seed, int)
        ):
            raise ValueError(f"augment_seed must be an integer or None, got {self.augment_seed!r}")


# --------------------------------------------------------------------------- cache


def _file_id(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _cache_key(rec: Recording, protocol: str, params: dict[str, Any]) -> str:
    blob = json.dumps(
        {
            "version": CACHE_VERSION,
            "protocol": protocol,
            "events": _file_id(rec.events),
            "labels": _file_id(rec.labels),
            "params": params,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_tmp(cache_dir: Path) -> int:
    """Remove temporary entries left by dead processes on this machine; return how many."""
    removed = 0
    host = _host_tag()
    for path in cache_dir.glob(_TMP_PREFIX + "*"):
        parts = path.name[len(_TMP_PREFIX) :].split("-")
        if len(parts) < 3 or parts[0] != host or not parts[1].isdigit():
            continue
        if not _pid_alive(int(parts[1])):
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed


def _host_tag() -> str:
    return hashlib.sha256(platform.node().encode()).hexdigest()[:8]


@contextlib.contextmanager
def _atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary folder; rename it to ``final`` when the block completes.

    On any exception (or interruption) the temporary folder is removed and ``final`` is
    untouched. If ``final`` appeared meanwhile (another process), ours is discarded.
    """
    tmp = final.with_name(f"{_TMP_PREFIX}{_host_tag()}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    try:
        yield tmp
        for p in tmp.iterdir():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "meta.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=1, sort_keys=True))


def _load_meta(entry: Path) -> dict[str, Any] | None:
    """The meta of a complete entry, or ``None`` when absent or not complete."""
    try:
        meta: dict[str, Any] = json.loads((entry / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    if meta.get("version") != CACHE_VERSION:
        return None
    frames = entry / "frames.f32"
    want = int(np.prod(meta["shape"])) * 4
    if not frames.is_file() or frames.stat().st_size != want:
        return None
    return meta


# --------------------------------------------------------------------------- preprocessing


@dataclass
class DatasetReport:
    """What building a dataset found (nothing dropped without a count).

    Attributes:
        recordings: Recordings in the dataset.
        samples: Clips (``clip``) or chunks (``stream``).
        cache_hits: Recordings loaded from the cache.
        cache_misses: Recordings preprocessed now.
        overlapping_windows: ``(recording, window, window)`` for every overlapping pair.
        repeated_classes: Recording name -> {class: count} where a class occurs twice+.
        empty_clips: Clips with no event (all-zero frames).
        late_events: Events dropped because they came after their bin or clip was
            finished (non-monotonic timestamps in the file).
        outside_sensor: Events outside the sensor (not binned).
        cropped: Events outside the crop (not binned).
        reader_skipped: What the file readers skipped, by reason.
    """

    recordings: int = 0
    samples: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    overlapping_windows: list[tuple[str, GestureWindow, GestureWindow]] = field(
        default_factory=list
    )
    repeated_classes: dict[str, dict[int, int]] = field(default_factory=dict)
    empty_clips: int = 0
    late_events: int = 0
    outside_sensor: int = 0
    cropped: int = 0
    reader_skipped: Counter[str] = field(default_factory=Counter)

    def add_meta(self, name: str, meta: dict[str, Any]) -> None:
        for a, b in meta.get("overlaps", []):
            self.overlapping_windows.append((name, GestureWindow(*a), GestureWindow(*b)))
        if meta.get("repeated"):
            self.repeated_classes[name] = {int(k): v for k, v in meta["repeated"].items()}
        self.empty_clips += int(meta.get("empty_clips", 0))
        self.late_events += int(meta.get("late_events", 0))
        self.outside_sensor += int(meta.get("outside_sensor", 0))
        self.cropped += int(meta.get("cropped", 0))
        self.reader_skipped.update(meta.get("reader_skipped", {}))

    def log(self, protocol: str) -> None:
        if self.overlapping_windows:
            log.warning(
                "%s: %d overlapping label window pair(s), kept as they are (first: %s)",
                protocol,
                len(self.overlapping_windows),
                self.overlapping_windows[0][0],
            )
        if self.repeated_classes:
            log.info(
                "%s: repeated classes in %d recording(s): %s",
                protocol,
                len(self.repeated_classes),
                self.repeated_classes,
            )
        for what, n in (
            ("empty clips (no event in the window)", self.empty_clips),
            ("late events dropped (timestamps going back)", self.late_events),
            ("events outside the sensor", self.outside_sensor),
        ):
            if n:
                log.warning("%s: %d %s", protocol, n, what)
        if self.reader_skipped:
            log.warning("%s: skipped by the readers: %s", protocol, dict(self.reader_skipped))


def _label_meta(labels: Labels) -> dict[str, Any]:
    return {
        "windows": [dataclasses.astuple(w) for w in labels.windows],
        "overlaps": [[dataclasses.astuple(a), dataclasses.astuple(b)] for a, b in labels.overlaps],
        "repeated": {str(k): v for k, v in labels.repeated_classes.items()},
    }


def _preprocess_clips(
    rec: Recording, cfg: ClipConfig, out: Path, chunk_events: int
) -> dict[str, Any]:
    """Write the clips of one recording into the folder ``out``; return its meta."""
    labels = read_labels(rec.labels)
    windows = labels.windows
    n = len(windows)
    counts = BinCounts()
    n_events = [0] * n
    late = 0
    with open_events(rec.events, chunk_events) as reader:
        size = cfg.resolve_size(reader.sensor_size, rec.events)
        geom = cfg.geometry(size)
        shape = (n, cfg.n_frames, *geom.frame_shape)
        raw = out / "frames.f32"
        frames: np.memmap[Any, Any] | None = None
        if n:
            frames = np.memmap(raw, dtype="<f4", mode="w+", shape=shape)
        else:
            raw.write_bytes(b"")
        order = sorted(range(n), key=lambda i: (windows[i].start_us, i))
        pending: dict[int, list[Events]] = {}
        done: list[int] = []
        nxt = 0

        def finish(i: int) -> None:
            assert frames is not None
            parts = pending.pop(i)
            ev = np.concatenate(parts) if parts else np.empty(0, dtype=EVENT_DTYPE)
            n_events[i] = len(ev)
            frames[i] = equal_count_frames(
                ev, cfg.n_frames, size, **cfg.geometry_kwargs(), counts=counts
            )
            done.append(i)

        for packet in reader:
            if not len(packet):
                continue
            t = packet["t"]
            t_lo, t_hi = int(t.min()), int(t.max())
            while nxt < n and windows[order[nxt]].start_us <= t_hi:
                pending[order[nxt]] = []
                nxt += 1
            for i, parts in pending.items():
                w = windows[i]
                if w.start_us <= t_hi and w.end_us > t_lo:
                    m = (t >= w.start_us) & (t < w.end_us)
                    if m.any():
                        parts.append(packet[m])
            for i in done:  # events of a finished clip: only when timestamps go back
                w = windows[i]
                if w.start_us <= t_hi and w.end_us > t_lo:
                    late += int(np.count_nonzero((t >= w.start_us) & (t < w.end_us)))
            for i in [i for i in pending if windows[i].end_us <= t_hi]:
                finish(i)
        while nxt < n:
            pending[order[nxt]] = []
            nxt += 1
        for i in list(pending):
            finish(i)
        skipped = dict(reader.skipped)
    if frames is not None:
        frames.flush()
        del frames
    np.save(out / "labels.npy", np.array([w.label for w in windows], dtype=np.int64))
    meta = {
        "version": CACHE_VERSION,
        "protocol": "clip",
        "events": str(rec.events),
        "shape": list(shape),
        "sensor_size": list(size),
        "n_events": n_events,
        "empty_clips": sum(1 for k in n_events if k == 0),
        "late_events": late,
        "outside_sensor": counts.outside_sensor,
        "cropped": counts.cropped,
        "reader_skipped": skipped,
        **_label_meta(labels),
    }
    _write_json(out / "meta.json", meta)
    return meta


def _augmented_packets(
    reader: Any,
    rec: Recording,
    size: tuple[int, int],
    seed: int,
    windows: list[GestureWindow],
    chunk_events: int,
) -> tuple[list[Events], list[GestureWindow], dict[str, Any]]:
    """The whole recording, augmented (events in packets, scaled label windows, a note)."""
    from .augment import AUGMENT_VERSION, augment_events, augment_seed_for, scale_windows

    parts = [np.asarray(p) for p in reader if len(p)]
    events = np.concatenate(parts) if parts else np.zeros(0, dtype=EVENT_DTYPE)
    copy_seed = augment_seed_for(seed, rec.name)
    augmented, scale = augment_events(events, size, copy_seed)
    t0 = int(events["t"][0]) if len(events) else 0
    packets = [augmented[i : i + chunk_events] for i in range(0, len(augmented), chunk_events)]
    note = {
        "version": AUGMENT_VERSION,
        "seed": seed,
        "copy_seed": copy_seed,
        "time_scale": scale,
        "events_in": len(events),
        "events_out": len(augmented),
    }
    return packets, scale_windows(windows, t0, scale), note


def _preprocess_stream(
    rec: Recording, cfg: StreamConfig, out: Path, chunk_events: int
) -> dict[str, Any]:
    """Bin one whole recording into ``out/frames.f32`` with the live Binner; return meta."""
    labels = read_labels(rec.labels)
    windows = list(labels.windows)
    augment: dict[str, Any] | None = None
    with open_events(rec.events, chunk_events) as reader:
        size = cfg.resolve_size(reader.sensor_size, rec.events)
        geom = cfg.geometry(size)
        bin_bytes = 4 * int(np.prod(geom.frame_shape))
        steps = max(1, min(4096, _BLOCK_BYTES // bin_bytes))
        binner = Binner(
            None, cfg.bin_us, steps, size, **cfg.geometry_kwargs(), max_gap_windows=None
        )
        first: int | None = None
        last: int | None = None
        written = 0
        packets: Iterable[Events] = reader
        if cfg.augment_seed is not None:
            packets, windows, augment = _augmented_packets(
                reader, rec, size, cfg.augment_seed, windows, chunk_events
            )
        with open(out / "frames.f32", "wb") as f:
            for packet in packets:
                if not len(packet):
                    continue
                t = packet["t"]
                if first is None:
                    first = int(t[0])
                hi = int(t.max())
                last = hi if last is None else max(last, hi)
                for win in binner.push(packet):
                    f.write(win.frames.tobytes())
                    written += win.n_bins
            if first is None or last is None:
                raise FormatError(rec.events, None, "no events: nothing to train on")
            t0 = first // cfg.bin_us * cfg.bin_us
            n_bins = (last - t0) // cfg.bin_us + 1
            start = binner.next_window_start_us
            if written < n_bins and start is not None:
                for win in binner.flush(start + binner.window_us):
                    f.write(win.frames.tobytes())
                    written += win.n_bins
            f.truncate(n_bins * bin_bytes)
        skipped = dict(reader.skipped)
    targets = step_targets(windows, t0, cfg.bin_us, n_bins, cfg.target_rule)
    np.save(out / "targets.npy", targets)
    st = binner.stats
    meta = {
        "version": CACHE_VERSION,
        "protocol": "stream",
        "events": str(rec.events),
        "shape": [n_bins, *geom.frame_shape],
        "sensor_size": list(size),
        "t0_us": t0,
        "bin_us": cfg.bin_us,
        "first_t_us": first,
        "last_t_us": last,
        "binned": st.binned,
        "late_events": st.late + st.out_of_order,
        "outside_sensor": st.outside_sensor,
        "cropped": st.cropped,
        "reader_skipped": skipped,
        **_label_meta(labels),
    }
    if augment is not None:
        meta["augment"] = augment
    _write_json(out / "meta.json", meta)
    return meta


def _progress(
    items: Iterable[Any], desc: str, enabled: bool, total: int | None = None
) -> Iterable[Any]:
    """``items`` with a progress bar (``total`` for an iterator without a length)."""
    n = total if total is not None else len(items)  # type: ignore[arg-type]
    if not enabled or n == 0:
        return items
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is in the train extra; fall back to a plain line
        return _plain_progress(items, desc, n)
    return tqdm(items, desc=desc, unit="rec", file=sys.stderr, total=n)


def _plain_progress(items: Iterable[Any], desc: str, total: int) -> Iterator[Any]:
    for k, item in enumerate(items, 1):
        print(f"\r{desc}: {k}/{total}", end="", file=sys.stderr, flush=True)
        yield item
    print(file=sys.stderr)


def in_processes(
    fn: Any, calls: Sequence[tuple[Any, ...]], workers: int, desc: str, progress: bool
) -> list[Any]:
    """``[fn(*args) for args in calls]``, in up to ``workers`` fresh processes when
    ``workers > 1`` (spawned, not forked: torch's and numba's threads do not survive a
    fork). Results keep the order of ``calls``. The first error is raised as it is (after
    the calls not yet started are cancelled and the running ones finish); ``fn`` must be
    a module-level function and its arguments picklable.
    """
    if workers <= 1 or len(calls) <= 1:
        return [fn(*args) for args in _progress(calls, desc, progress)]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    results: list[Any] = [None] * len(calls)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(workers, len(calls)), mp_context=ctx) as pool:
        futures = {pool.submit(fn, *args): k for k, args in enumerate(calls)}
        try:
            for fut in _progress(as_completed(futures), desc, progress, len(calls)):
                results[futures[fut]] = fut.result()
        except BrokenProcessPool:
            raise SmastreamError(
                f"{desc}: a worker process died (out of memory?); --workers 0 prepares the "
                "data in this process and shows what went wrong"
            ) from None
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
    return results


def _prepare_entry(
    entry: Path, rec: Recording, preprocess: Any, cfg: Any, chunk_events: int
) -> dict[str, Any]:
    if entry.exists():  # an old, incomplete or outdated entry under the final name
        shutil.rmtree(entry)
    with _atomic_dir(entry) as tmp:
        meta: dict[str, Any] = preprocess(rec, cfg, tmp, chunk_events)
    return meta


def _entry_path(cache_dir: Path, rec: Recording, protocol: str, params: dict[str, Any]) -> Path:
    return cache_dir / f"{rec.name}-{protocol}-{_cache_key(rec, protocol, params)}"


def _build_cache(
    recordings: Sequence[Recording],
    cache_dir: Path,
    protocol: str,
    params: dict[str, Any],
    preprocess: Any,
    cfg: Any,
    progress: bool,
    report: DatasetReport,
    chunk_events: int,
    workers: int = 0,
) -> list[tuple[Path, dict[str, Any]]]:
    cache_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(cache_dir)
    entries = [_entry_path(cache_dir, rec, protocol, params) for rec in recordings]
    metas = [_load_meta(entry) for entry in entries]
    todo = [k for k, m in enumerate(metas) if m is None]
    report.cache_hits += len(recordings) - len(todo)
    report.cache_misses += len(todo)
    done = in_processes(
        _prepare_entry,
        [(entries[k], recordings[k], preprocess, cfg, chunk_events) for k in todo],
        workers,
        f"preprocessing ({protocol})",
        progress,
    )
    for k, meta in zip(todo, done, strict=True):
        metas[k] = meta
    out = []
    for rec, entry, meta in zip(recordings, entries, metas, strict=True):
        assert meta is not None
        report.add_meta(rec.name, meta)
        out.append((entry, meta))
    report.recordings = len(recordings)
    return out


# --------------------------------------------------------------------------- datasets


class _Frames:
    """Lazily memory-mapped raw frame files (reopened after pickling, per worker)."""

    def __init__(self, entries: list[tuple[Path, tuple[int, ...]]]) -> None:
        self._entries = entries
        self._maps: dict[int, np.memmap] = {}

    def __getitem__(self, k: int) -> np.memmap:
        m = self._maps.get(k)
        if m is None:
            path, shape = self._entries[k]
            m = np.memmap(path / "frames.f32", dtype="<f4", mode="r", shape=shape)
            self._maps[k] = m
        return m

    def __getstate__(self) -> dict[str, Any]:
        return {"_entries": self._entries, "_maps": {}}


def _params(cfg: Any, exclude: Iterable[str] = ()) -> dict[str, Any]:
    d = dataclasses.asdict(cfg)
    for k in exclude:
        d.pop(k)
    if d.get("augment_seed", 0) is None:  # un-augmented entries keep their old keys
        d.pop("augment_seed")
    elif "augment_seed" in d:
        from .augment import AUGMENT_VERSION

        d["augment_version"] = AUGMENT_VERSION
    return d


def _stream_params(cfg: StreamConfig) -> dict[str, Any]:
    """Cache-key parameters of a stream entry: the chunking is applied at read time, so
    entries of any ``chunk_steps`` are shared (:class:`StreamDataset` and
    :class:`StreamPrefetcher` must agree on this, or prefetched draws are missed)."""
    return _params(cfg, exclude=("chunk_steps",))


class ClipDataset(Dataset[tuple[torch.Tensor, int]]):
    """The ``clip`` protocol: one sample per labelled gesture window.

    Preprocesses what is not cached yet (with a progress bar), then serves clips from
    memory-mapped cache files.

    Args:
        recordings: Labelled recordings.
        cache_dir: Folder of the preprocessing cache (created if needed).
        config: :class:`ClipConfig`.
        progress: Show progress while preprocessing.
        chunk_events: Events per packet read while preprocessing (bounds memory; does
            not change the result).
        workers: Preprocess the recordings missing from the cache in this many
            processes (0 or 1: in this one). Does not change the result.

    Attributes:
        report: :class:`DatasetReport`.
        labels: ``int64[N]`` class of every sample.
        index: ``(recording index, window index)`` of every sample.
        windows: The :class:`GestureWindow` of every sample.

    Items:
        ``(frames, label)``: ``float32 [T, 2, H, W]`` event counts and the class 0..10.
    """

    def __init__(
        self,
        recordings: Sequence[Recording],
        cache_dir: str | Path,
        config: ClipConfig | None = None,
        *,
        progress: bool = True,
        chunk_events: int = DEFAULT_CHUNK_EVENTS,
        workers: int = 0,
    ) -> None:
        self.recordings = list(recordings)
        self.config = config if config is not None else ClipConfig()
        self.report = DatasetReport()
        built = _build_cache(
            self.recordings,
            Path(cache_dir),
            "clip",
            _params(self.config),
            _preprocess_clips,
            self.config,
            progress,
            self.report,
            chunk_events,
            workers,
        )
        self.index: list[tuple[int, int]] = []
        self.windows: list[GestureWindow] = []
        for r, (_, meta) in enumerate(built):
            for w, win in enumerate(meta["windows"]):
                self.index.append((r, w))
                self.windows.append(GestureWindow(*win))
        self.labels = np.array([w.label for w in self.windows], dtype=np.int64)
        self._frames = _Frames([(e, tuple(m["shape"])) for e, m in built])
        self.report.samples = len(self.index)
        self.report.log("clip")

    def __len__(self) -> int:
        return len(self.index)

    def frames(self, i: int) -> npt.NDArray[np.float32]:
        """Sample ``i``'s frames as a numpy copy, ``float32 [T, 2, H, W]``."""
        r, w = self.index[i]
        return np.array(self._frames[r][w])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"sample {i} out of range 0..{len(self) - 1}")
        i %= len(self)
        return torch.from_numpy(self.frames(i)), int(self.labels[i])


class StreamChunk(NamedTuple):
    """One chunk of a continuous recording.

    Attributes:
        frames: ``float32 [S, 2, H, W]`` event counts.
        targets: ``int64 [S]``: class 0..10, :data:`NO_GESTURE`, or :data:`PAD_TARGET`.
        mask: ``bool [S]``: False on padding steps after the end of the recording.
        recording: Index of the recording.
        chunk: Index of the chunk within the recording (0 starts it: reset state).
    """

    frames: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor
    recording: int
    chunk: int


class StreamDataset(Dataset[StreamChunk]):
    """The ``stream`` protocol: recordings in fixed time bins, cut into chunks.

    Items come in recording order, chunks in time order: item ``i`` is chunk
    ``index[i] = (recording, chunk)``. Chunk ``c`` of a recording holds bins
    ``c*S .. (c+1)*S - 1``; concatenated, a recording's chunks are exactly
    :func:`~smastream.stream.binning.bin_events` of the whole recording (plus padding).
    Use :class:`StreamBatcher` to keep state carried across chunks.

    Args:
        recordings: Labelled recordings.
        cache_dir: Folder of the preprocessing cache.
        config: :class:`StreamConfig`.
        progress: Show progress while preprocessing.
        chunk_events: Events per packet read while preprocessing (bounds memory; does
            not change the result).
        workers: Preprocess the recordings missing from the cache in this many
            processes (0 or 1: in this one). Does not change the result.

    Attributes:
        report: :class:`DatasetReport`.
        index: ``(recording, chunk)`` of every item.
        chunks_per_recording: Chunks of every recording.
        bins_per_recording: Unpadded bins of every recording.
        t0_us: First bin edge of every recording, µs.
        entries: The cache folder of every recording.
    """

    def __init__(
        self,
        recordings: Sequence[Recording],
        cache_dir: str | Path,
        config: StreamConfig | None = None,
        *,
        progress: bool = True,
        chunk_events: int = DEFAULT_CHUNK_EVENTS,
        workers: int = 0,
    ) -> None:
        self.recordings = list(recordings)
        self.config = config if config is not None else StreamConfig()
        self.report = DatasetReport()
        built = _build_cache(
            self.recordings,
            Path(cache_dir),
            "stream",
            _stream_params(self.config),
            _preprocess_stream,
            self.config,
            progress,
            self.report,
            chunk_events,
            workers,
        )
        s = self.config.chunk_steps
        self.bins_per_recording = [int(m["shape"][0]) for _, m in built]
        self.t0_us = [int(m["t0_us"]) for _, m in built]
        self.chunks_per_recording = [-(-n // s) for n in self.bins_per_recording]
        self.index = [(r, c) for r, n in enumerate(self.chunks_per_recording) for c in range(n)]
        self.entries = [e for e, _ in built]
        self._targets = [np.load(e / "targets.npy") for e, _ in built]
        self._frames = _Frames([(e, tuple(m["shape"])) for e, m in built])
        self.frame_shape = tuple(built[0][1]["shape"][1:]) if built else None
        self.report.samples = len(self.index)
        self.report.log("stream")

    def remove_from_cache(self) -> None:
        """Remove this dataset's cache entries (a draw that will not be played again).

        Frames already read stay readable (they are memory-mapped); the others are gone:
        call it when the dataset will not be read again. A later build of the same
        entries bins them again.
        """
        for entry in self.entries:
            shutil.rmtree(entry, ignore_errors=True)

    def __len__(self) -> int:
        return len(self.index)

    def targets(self, recording: int) -> npt.NDArray[np.int64]:
        """Per-bin targets of a whole recording, ``int64 [n_bins]`` (no padding)."""
        return self._targets[recording]

    def chunk_arrays(
        self, recording: int, chunk: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
        """``(frames [S, 2, H, W], targets [S], mask [S])`` as numpy arrays (copies)."""
        s = self.config.chunk_steps
        n = self.bins_per_recording[recording]
        if not 0 <= chunk < self.chunks_per_recording[recording]:
            raise IndexError(
                f"chunk {chunk} out of range 0..{self.chunks_per_recording[recording] - 1} "
                f"of recording {recording}"
            )
        lo, hi = chunk * s, min((chunk + 1) * s, n)
        src = self._frames[recording]
        frames = np.zeros((s, *src.shape[1:]), dtype=np.float32)
        frames[: hi - lo] = src[lo:hi]
        targets = np.full(s, PAD_TARGET, dtype=np.int64)
        targets[: hi - lo] = self._targets[recording][lo:hi]
        mask = np.zeros(s, dtype=np.bool_)
        mask[: hi - lo] = True
        return frames, targets, mask

    def __getitem__(self, i: int) -> StreamChunk:
        if not -len(self) <= i < len(self):
            raise IndexError(f"item {i} out of range 0..{len(self) - 1}")
        r, c = self.index[i]
        frames, targets, mask = self.chunk_arrays(r, c)
        return StreamChunk(
            torch.from_numpy(frames), torch.from_numpy(targets), torch.from_numpy(mask), r, c
        )


class StreamPrefetcher:
    """Bins stream-protocol cache entries in background processes while the caller goes on
    (the training loop plays one epoch's draw while the next one is binned).

    One pool of ``max(1, workers)`` spawned processes for the prefetcher's life, started by
    the first :meth:`submit` that has work (spawned once, not once per draw; spawned, not
    forked, as :func:`in_processes`). Entries are written as :class:`StreamDataset` writes
    them: in a temporary folder renamed when complete, so a failure or an interruption
    leaves no complete-looking entry (the temporary folder is removed, or after a kill by
    the next build of the cache). A :class:`StreamDataset` built afterwards finds them.

    Args:
        cache_dir: Folder of the preprocessing cache.
        workers: Background processes (0 and 1: one).
        progress: Show a progress bar per :meth:`submit` while it runs.
        chunk_events: As in :class:`StreamDataset`.
    """

    def __init__(
        self,
        cache_dir: str | Path,
        workers: int = 0,
        *,
        progress: bool = True,
        chunk_events: int = DEFAULT_CHUNK_EVENTS,
    ) -> None:
        self.cache_dir = Path(cache_dir)
        self.workers = max(1, int(workers))
        self.progress = progress
        self.chunk_events = chunk_events
        self._pool: Any = None

    def submit(
        self, recordings: Sequence[Recording], config: StreamConfig, desc: str
    ) -> PendingEntries:
        """Start binning the entries of ``recordings`` under ``config`` that are not in
        the cache yet (cache hits are left as they are); returns at once."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        params = _stream_params(config)
        todo = [
            (entry, rec)
            for rec in recordings
            if _load_meta(entry := _entry_path(self.cache_dir, rec, "stream", params)) is None
        ]
        futures = []
        if todo:
            if self._pool is None:
                import multiprocessing
                from concurrent.futures import ProcessPoolExecutor

                ctx = multiprocessing.get_context("spawn")
                self._pool = ProcessPoolExecutor(self.workers, mp_context=ctx)
            futures = [
                self._pool.submit(
                    _prepare_entry, entry, rec, _preprocess_stream, config, self.chunk_events
                )
                for entry, rec in todo
            ]
        return PendingEntries([e for e, _ in todo], futures, desc, self.progress)

    def close(self) -> None:
        """Cancel the entries not started; wait for the running ones (each ends complete
        or removed)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class PendingEntries:
    """Entries a :class:`StreamPrefetcher` is binning (see :meth:`wait`).

    Attributes:
        entries: The cache folders being made (the cache misses of the submission).
    """

    def __init__(self, entries: list[Path], futures: list[Any], desc: str, progress: bool) -> None:
        self.entries = entries
        self._futures = futures
        self._desc = desc
        self._bar: Any = None
        if progress and futures:
            try:
                from tqdm import tqdm

                self._bar = tqdm(
                    total=len(futures), desc=desc, unit="rec", file=sys.stderr, leave=False
                )
            except ImportError:  # tqdm is in the train extra
                pass
        for fut in futures:
            fut.add_done_callback(self._tick)

    def _tick(self, fut: Any) -> None:
        if self._bar is not None and not fut.cancelled():
            self._bar.update(1)

    def done(self) -> bool:
        """Whether every entry is finished (made, or failed)."""
        return all(f.done() for f in self._futures)

    def wait(self) -> None:
        """Wait until every entry is made.

        Raises:
            The first error of a recording as it is; SmastreamError: a background process
            died.
        """
        from concurrent.futures.process import BrokenProcessPool

        try:
            for fut in self._futures:
                fut.result()
        except BrokenProcessPool:
            raise SmastreamError(
                f"{self._desc}: a background process died (out of memory?)"
            ) from None
        finally:
            if self._bar is not None:
                self._bar.close()
                self._bar = None


class StreamBatch(NamedTuple):
    """``B`` lanes of one chunk each, time-major like ``SMASNN.sequence``.

    Attributes:
        frames: ``float32 [S, B, 2, H, W]``.
        targets: ``int64 [S, B]`` (:data:`PAD_TARGET` where ``mask`` is False).
        mask: ``bool [S, B]``: False on padding and on idle lanes.
        reset: ``bool [B]``: the lane starts a new recording (or is idle): reset its
            state before this batch.
        recording: ``int64 [B]``: the lane's recording index, -1 when idle.
        chunk: ``int64 [B]``: the chunk index within that recording, -1 when idle.
    """

    frames: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor
    reset: torch.Tensor
    recording: torch.Tensor
    chunk: torch.Tensor


class StreamBatcher:
    """Batches of ``B`` lanes for truncated BPTT with the state carried between batches.

    Lane ``b`` plays one recording chunk after chunk; when that recording ends, the lane
    takes the next recording of the epoch's order and flags ``reset[b]``. When no
    recording is left, finished lanes are idle (zero frames, ``mask`` False) until every
    lane is done. Recordings are split over ``world_size`` ranks (DDP) before the lanes.

    Args:
        dataset: A :class:`StreamDataset`.
        batch_size: ``B`` lanes.
        shuffle: Shuffle the recording order every epoch (seeded by ``seed`` and the
            epoch set with :meth:`set_epoch`).
        seed: Base seed of the shuffle.
        rank, world_size: This process's share of the recordings.

    Yields:
        :class:`StreamBatch`.
    """

    def __init__(
        self,
        dataset: StreamDataset,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if not (isinstance(world_size, int) and world_size >= 1 and 0 <= rank < world_size):
            raise ValueError(
                f"need world_size >= 1 and 0 <= rank < world_size, got {rank!r}, {world_size!r}"
            )
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch (changes the shuffle order)."""
        self.epoch = int(epoch)

    def order(self) -> list[int]:
        """This rank's recordings, in the order lanes take them this epoch."""
        n = len(self.dataset.recordings)
        idx = np.arange(n)
        if self.shuffle:
            idx = np.random.default_rng([self.seed, self.epoch]).permutation(n)
        return [int(r) for r in idx[self.rank :: self.world_size]]

    def plan(self) -> list[list[tuple[int, int]]]:
        """Every batch as a list of ``(recording, chunk)`` per lane, ``(-1, -1)`` idle."""
        queue = self.order()[::-1]
        lanes: list[tuple[int, int]] = [(-1, -1)] * self.batch_size
        left = [0] * self.batch_size
        batches: list[list[tuple[int, int]]] = []
        while True:
            for b in range(self.batch_size):
                if left[b] == 0:
                    if queue:
                        r = queue.pop()
                        lanes[b] = (r, 0)
                        left[b] = self.dataset.chunks_per_recording[r]
                    else:
                        lanes[b] = (-1, -1)
            if all(r < 0 for r, _ in lanes):
                return batches
            batches.append(list(lanes))
            for b in range(self.batch_size):
                r, c = lanes[b]
                if r >= 0:
                    left[b] -= 1
                    lanes[b] = (r, c + 1)

    def __len__(self) -> int:
        return len(self.plan())

    def __iter__(self) -> Iterator[StreamBatch]:
        ds = self.dataset
        s = ds.config.chunk_steps
        shape = ds.frame_shape or (2, 1, 1)
        for lanes in self.plan():
            bsz = len(lanes)
            frames = np.zeros((s, bsz, *shape), dtype=np.float32)
            targets = np.full((s, bsz), PAD_TARGET, dtype=np.int64)
            mask = np.zeros((s, bsz), dtype=np.bool_)
            for b, (r, c) in enumerate(lanes):
                if r >= 0:
                    frames[:, b], targets[:, b], mask[:, b] = ds.chunk_arrays(r, c)
            rec = torch.tensor([r for r, _ in lanes], dtype=torch.int64)
            chunk = torch.tensor([c for _, c in lanes], dtype=torch.int64)
            yield StreamBatch(
                torch.from_numpy(frames),
                torch.from_numpy(targets),
                torch.from_numpy(mask),
                chunk <= 0,
                rec,
                chunk,
            )


# --------------------------------------------------------------------------- synthetic


def make_synthetic_recordings(
    folder: str | Path,
    seeds: Iterable[int],
    seconds: float,
    sensor: str | tuple[int, int] = "dvs128",
    *,
    format: str = "aedat4",
    packet_us: int = 10_000,
    progress: bool = False,
    workers: int = 0,
    **synth_options: Any,
) -> list[Recording]:
    """Write labelled synthetic recordings (one per seed) through the file writers.

    Each recording is ``synth-seed<seed>-<hash>.<ext>`` plus its ``_labels.csv``; the hash
    covers every generator option, so an existing pair with the same name is the same
    recording (the generator is deterministic) and is reused, not rewritten. The event
    file is written under a temporary name and renamed when complete; the labels are
    written after it (a crash in between leaves an unlabelled file, which scans report).

    Args:
        folder: Output folder (created if needed).
        seeds: Generator seeds; the demo seeds (:data:`DEMO_SEEDS`) are refused.
        seconds: Duration of each recording.
        sensor: Sensor name or ``(W, H)``.
        format: ``"aedat4"`` or ``"aedat3.1"``.
        packet_us: Packet length used while writing (does not change the events).
        progress: Show progress.
        workers: Generate in this many processes (0 or 1: in this one).
        **synth_options: Other :class:`~smastream.stream.synthetic.SynthConfig` fields.

    Returns:
        The recordings, in ``seeds`` order.

    Raises:
        ValueError: a demo seed, a repeated seed, or a bad option (quoting it).
    """
    from smastream.stream.synthetic import DEMO_SEEDS, SynthConfig

    seeds = [int(s) for s in seeds]
    bad = sorted(set(seeds) & set(DEMO_SEEDS))
    if bad:
        raise ValueError(
            f"seeds {bad} are reserved for the demo recordings {DEMO_SEEDS}: "
            "use other seeds for training data"
        )
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds repeat: {seeds}")
    ext = {"aedat4": ".aedat4", "aedat3.1": ".aedat"}.get(format)
    if ext is None:
        raise ValueError(f"format must be 'aedat4' or 'aedat3.1', got {format!r}")
    size = resolve_sensor_size(tuple(sensor) if isinstance(sensor, list) else sensor)
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    out, todo = [], []
    for seed in seeds:
        cfg = SynthConfig(sensor_size=size, seconds=seconds, seed=seed, **synth_options)
        tag = hashlib.sha256(repr((cfg, format)).encode()).hexdigest()[:8]
        path = root / f"synth-seed{seed}-{tag}{ext}"
        rec = Recording(path, labels_path_for(path))
        out.append(rec)
        if not (path.is_file() and rec.labels.is_file()):
            todo.append((rec, cfg, size, format, packet_us))
        elif not scenes_path_for(path).is_file():  # made before scene files: no simulation
            from smastream.stream.synthetic import SyntheticGestures

            write_scenes(scenes_path_for(path), SyntheticGestures(cfg).scenes)
    in_processes(_write_synthetic, todo, workers, "synthesising", progress)
    return out


def _write_synthetic(
    rec: Recording, cfg: Any, size: tuple[int, int], format: str, packet_us: int
) -> None:
    """One synthetic recording: events under a temporary name, renamed when complete, then
    the labels (a crash in between leaves an unlabelled file, which scans report)."""
    from smastream.stream.synthetic import SyntheticGestures

    path = rec.events
    gen = SyntheticGestures(cfg)
    tmp = path.with_name(f".{path.stem}.part{path.suffix}")
    try:
        with open_writer(tmp, size, format=format) as writer:
            for packet in gen.packets(packet_us):
                writer.write(packet)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    write_labels(rec.labels, gen.labels)
    write_scenes(scenes_path_for(path), gen.scenes)

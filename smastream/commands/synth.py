"""``smastream synth``: write a synthetic, labelled gesture recording.

Writes ``OUT`` (AEDAT 4 by default), ``OUT_labels.csv`` (DVS Gesture label format) and
``OUT_scenes.csv`` (what happens between the gestures) from
:class:`smastream.stream.synthetic.SyntheticGestures`. All appear under their final names
only when complete: the events go to a hidden temporary file that is renamed at the end, and
an interrupted run leaves neither.

The demo recording shipped in ``recordings/`` was made with::

    smastream synth recordings/demo.aedat4 --seconds 60 --seed 7 --gesture-s 2 3.5 \\
        --compression zstd

(439,690 events, 10 gestures of 10 classes between no-gesture scenes, 2.6 MB.)

Seed 7 is reserved for the demo (seeds 7 and 8 for demos in general); training and
evaluation data must use other seeds.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from smastream.commands.common import non_negative_float, positive_float
from smastream.errors import SmastreamError


def _sensor(text: str) -> tuple[int, int]:
    from smastream.stream.events import sensor_size

    try:
        return sensor_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=Path, metavar="OUT", help="output file, e.g. synth.aedat4")
    parser.add_argument("--seconds", type=positive_float, default=60.0, help="duration (60)")
    parser.add_argument(
        "--sensor", type=_sensor, default=(128, 128),
        help="dvs128 (default), davis346, dvxplorer, dvxplorer-lite or WIDTHxHEIGHT",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument(
        "--gesture-s", type=positive_float, nargs=2, default=(2.0, 5.0), metavar=("MIN", "MAX"),
        help="gesture duration range in seconds (2 5)",
    )  # fmt: skip
    parser.add_argument(
        "--gap-s", type=non_negative_float, nargs=2, default=(0.5, 1.5),
        metavar=("MIN", "MAX"), help="idle gap range in seconds (0.5 1.5)",
    )  # fmt: skip
    parser.add_argument(
        "--noise-hz", type=non_negative_float, default=0.03,
        help="background-activity noise per pixel, Hz (0.03)",
    )  # fmt: skip
    parser.add_argument("--hot-pixels", type=int, default=3, help="number of hot pixels (3)")
    parser.add_argument(
        "--no-gesture-share", type=non_negative_float, default=0.45,
        help="share of the time outside gestures: still gaps plus no-gesture scenes (0.45)",
    )  # fmt: skip
    parser.add_argument(
        "--threshold", type=positive_float, default=0.25,
        help="mean ON and OFF contrast threshold, log intensity (0.25)",
    )  # fmt: skip
    parser.add_argument(
        "--refractory-us", type=int, default=1, help="pixel refractory period, µs (1)"
    )
    parser.add_argument(
        "--render-hz", type=positive_float, default=1000.0,
        help="rendered frames per second (1000)",
    )  # fmt: skip
    parser.add_argument(
        "--format", choices=("aedat4", "aedat3.1"), default="aedat4",
        help="file format (aedat4)",
    )  # fmt: skip
    parser.add_argument(
        "--compression",
        choices=("lz4", "zstd", "none"),
        default="lz4",
        help="AEDAT 4 compression (lz4); zstd makes files about a third smaller",
    )
    parser.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=True,
        help="show a progress line on stderr",
    )  # fmt: skip


def _temp_path(out: Path) -> Path:
    """A hidden name beside ``out`` with the same suffix (writers may look at it)."""
    return out.with_name(f".{out.stem}.partial-{os.getpid()}{out.suffix}")


def run(args: argparse.Namespace) -> int:
    from smastream.stream.formats import EventWriter, open_writer
    from smastream.stream.formats.base import WriteError
    from smastream.stream.formats.labels import (
        labels_path_for,
        scenes_path_for,
        write_labels,
        write_scenes,
    )
    from smastream.stream.synthetic import SynthConfig, SyntheticGestures

    try:
        config = SynthConfig(
            sensor_size=args.sensor,
            seconds=args.seconds,
            seed=args.seed,
            gesture_s=tuple(args.gesture_s),
            gap_s=tuple(args.gap_s),
            threshold_on=args.threshold,
            threshold_off=args.threshold,
            refractory_us=args.refractory_us,
            noise_hz=args.noise_hz,
            n_hot_pixels=args.hot_pixels,
            render_hz=args.render_hz,
            no_gesture_share=args.no_gesture_share,
        )
    except ValueError as exc:
        raise SmastreamError(str(exc)) from None
    if args.compression != "lz4" and args.format != "aedat4":
        raise SmastreamError(f"--compression {args.compression} needs --format aedat4")
    out: Path = args.out
    if not out.parent.is_dir():
        raise SmastreamError(f"{out.parent}: no such directory")
    # the finished file is renamed over the target: never over a device, FIFO or folder
    # (as root, a rename replaces /dev/null itself)
    for target in (out, labels_path_for(out), scenes_path_for(out)):
        if target.exists() and not target.is_file():
            raise SmastreamError(f"{target}: exists and is not a regular file; give a file path")
    gen = SyntheticGestures(config)
    labels = gen.labels
    tmp = _temp_path(out)
    total_s = config.seconds
    n_events = 0
    started = time.perf_counter()
    shown = started
    done = False
    try:
        writer: EventWriter
        if args.compression == "lz4":
            writer = open_writer(tmp, config.sensor_size, format=args.format)
        else:
            from smastream.stream.formats.aedat4 import Aedat4Writer

            writer = Aedat4Writer(tmp, config.sensor_size, compression=args.compression)
        with writer:
            for k, packet in enumerate(gen.packets(packet_us=50_000)):
                writer.write(packet)
                n_events += len(packet)
                now = time.perf_counter()
                if args.progress and now - shown >= 0.25:
                    shown = now
                    sim_s = min((k + 1) * 0.05, total_s)
                    _progress(sim_s, total_s, n_events, now - started)
        write_labels(labels_path_for(out), labels)
        write_scenes(scenes_path_for(out), gen.scenes)
        tmp.replace(out)
        done = True
    except WriteError as exc:
        if exc.path == str(tmp):  # name the file asked for, not the hidden temporary one
            raise WriteError(out, exc.reason) from None
        raise
    finally:
        if not done:
            tmp.unlink(missing_ok=True)
            if args.progress and shown > started:
                print(file=sys.stderr)
    elapsed = time.perf_counter() - started
    if args.progress:
        _progress(total_s, total_s, n_events, elapsed)
        print(file=sys.stderr)
    classes = len({w.label for w in labels})
    print(
        f"wrote {out} ({n_events} events, {config.sensor_size[0]}x{config.sensor_size[1]}, "
        f"{total_s:g} s) and {labels_path_for(out)} ({len(labels)} gestures, {classes} classes) "
        f"in {elapsed:.1f} s"
    )
    return 0


def _progress(sim_s: float, total_s: float, n_events: int, elapsed_s: float) -> None:
    speed = sim_s / elapsed_s if elapsed_s > 0 else 0.0
    sys.stderr.write(
        f"\rsynth: {sim_s:6.1f} / {total_s:g} s simulated, {n_events / 1e6:7.2f} Mevents, "
        f"{speed:5.1f}x real time"
    )
    sys.stderr.flush()

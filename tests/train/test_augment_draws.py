"""Stream-protocol augmentation draws: a fresh one per epoch (or K cycled), the next epoch's
binned in background processes while an epoch trains, nothing half-written left behind."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import smastream.train.loop as loop
from smastream.errors import FormatError
from smastream.stream.formats.labels import GestureWindow
from smastream.train.config import TrainConfig
from smastream.train.datasets import StreamConfig, StreamDataset, StreamPrefetcher, _load_meta
from smastream.train.loop import train
from tests.train.test_datasets import busy_events, write_recording
from tests.train.test_training import tiny


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("draw-cache")


def digest(ds: StreamDataset) -> str:
    """The binned frames and targets of every recording of a draw."""
    h = hashlib.sha256()
    for r in range(len(ds.recordings)):
        h.update(np.ascontiguousarray(ds._frames[r]).tobytes())
        h.update(ds.targets(r).tobytes())
    return h.hexdigest()


def draw_entries(cache: Path, seed: int) -> list[Path]:
    """Complete stream entries of augmentation seed ``seed``."""
    out = []
    for meta in cache.glob("*-stream-*/meta.json"):
        if (
            _load_meta(meta.parent)
            and json.loads(meta.read_text()).get("augment", {}).get("seed") == seed
        ):
            out.append(meta.parent)
    return out


def spy_epochs(
    monkeypatch: pytest.MonkeyPatch, after: Callable[[int, StreamDataset], None] | None = None
) -> list[dict[str, Any]]:
    """Record what every stream epoch played; ``after(epoch, ds)`` runs at its end."""
    played: list[dict[str, Any]] = []
    real = loop._stream_epoch

    def spy(net: Any, model: Any, batcher: Any, *args: Any) -> tuple[float, float]:
        ds = batcher.dataset
        played.append(
            {
                "epoch": batcher.epoch,
                "seed": ds.config.augment_seed,
                "digest": digest(ds),
                "hits": ds.report.cache_hits,
                "ds": ds,
            }
        )
        out = real(net, model, batcher, *args)
        if after is not None:
            after(batcher.epoch, ds)
        return out

    monkeypatch.setattr(loop, "_stream_epoch", spy)
    return played


def test_epoch_plays_draw_e_mod_k_and_k_draws_are_the_old_copies(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tiny(tmp_path, cache, augment_copies=3, epochs=4, max_batches=1)
    played = spy_epochs(monkeypatch)
    train(cfg)
    s = cfg.seed * 1000
    assert [p["epoch"] for p in played] == [0, 1, 2, 3]
    assert [p["seed"] for p in played] == [s, s + 1, s + 2, s]  # draw k: today's seed
    assert played[3]["digest"] == played[0]["digest"]
    assert len({p["digest"] for p in played[:3]}) == 3
    # the draws binned in the background are what the old code binned up front for copy k
    # (one StreamDataset per seed, in this process): bit for bit
    for p in played[:3]:
        ds = p["ds"]
        direct = StreamDataset(ds.recordings, tmp_path / "direct", ds.config, progress=False)
        assert digest(direct) == p["digest"]
    for k in range(3):  # given K: the draws stay in the cache for later runs
        assert len(draw_entries(cache, s + k)) == len(played[0]["ds"].recordings)


def test_default_is_a_fresh_draw_per_epoch_binned_while_the_epoch_trains(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tiny(tmp_path, cache, seed=11, epochs=3, max_batches=1)  # own draws in the cache
    assert cfg.augment_copies is None and cfg.resolved_augment_copies == 3
    s = cfg.seed * 1000
    n_recs = cfg.synth_recordings
    seen: dict[int, float] = {}

    def next_draw_binned_during(epoch: int, ds: StreamDataset) -> None:
        # still inside epoch `epoch` (the loop has not asked for the next draw): the next
        # epoch's draw gets complete in the cache from the background processes
        if epoch + 1 >= cfg.epochs:
            return
        t0 = time.monotonic()
        while len(draw_entries(cache, s + epoch + 1)) < n_recs:
            assert time.monotonic() - t0 < 180, f"draw {epoch + 1} not binned in background"
            time.sleep(0.05)
        seen[epoch] = time.monotonic() - t0

    played = spy_epochs(monkeypatch, next_draw_binned_during)
    first = train(cfg).losses
    assert sorted(seen) == [0, 1]
    assert [p["seed"] for p in played] == [s, s + 1, s + 2]
    assert len({p["digest"] for p in played}) == 3  # every epoch its own draw
    # each later draw is played once, then removed; draw 0 stays (the next start is a hit)
    assert len(draw_entries(cache, s)) == n_recs
    assert draw_entries(cache, s + 1) == [] and draw_entries(cache, s + 2) == []
    assert not list(cache.glob(".tmp-*"))

    played.clear()
    again = train(tiny(tmp_path / "again", cache, seed=11, epochs=3, max_batches=1)).losses
    assert played[0]["hits"] == n_recs  # draw 0 from the cache
    assert again == first  # draws binned again in background: the same data, seeded


def test_resume_bins_the_draw_of_its_first_epoch(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tiny(tmp_path, cache, seed=12, epochs=2, max_batches=1)
    train(cfg)
    played = spy_epochs(monkeypatch)
    train(tiny(tmp_path, cache, seed=12, epochs=4, max_batches=1), resume=True)
    s = cfg.seed * 1000
    assert [(p["epoch"], p["seed"]) for p in played] == [(2, s + 2), (3, s + 3)]
    metrics = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["batches"] for m in metrics] == [1, 1, 1, 1]


def test_background_binning_errors_and_cancels_leave_no_partial_entry(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    windows = [GestureWindow(300_000, 600_000, 2)]
    good = write_recording(tmp_path / "good.aedat", busy_events(rng, 0, 900_000, 6000), windows)
    bad = write_recording(tmp_path / "bad.aedat", busy_events(rng, 0, 900_000, 6000), windows)
    data = bad.events.read_bytes()
    bad.events.write_bytes(data[: len(data) * 2 // 3 + 5])
    cfg = StreamConfig(bin_us=20_000, chunk_steps=8, sensor_size=(32, 24), augment_seed=5)
    cache = tmp_path / "cache"
    pre = StreamPrefetcher(cache, workers=1, progress=False, chunk_events=300)
    try:
        pending = pre.submit([good, bad], cfg, "test")
        assert len(pending.entries) == 2
        with pytest.raises(FormatError, match=r"bad\.aedat"):
            pending.wait()
        names = [p.name for p in cache.iterdir()]
        assert len(names) == 1 and names[0].startswith("good-")  # no bad-, no .tmp-
        assert _load_meta(cache / names[0]) is not None
        assert pre.submit([good], cfg, "test").entries == []  # a cache hit: nothing to do

        # cancelled while binning (a closing run): what is there is complete
        for seed in range(6, 12):
            pre.submit([good], dataclasses.replace(cfg, augment_seed=seed), "test")
    finally:
        pre.close()
    assert not list(cache.glob(".tmp-*"))
    complete = [p for p in cache.iterdir() if _load_meta(p) is not None]
    assert len(complete) == len(list(cache.iterdir()))
    assert 1 <= len(complete) < 7  # the queued ones were cancelled, the started ones done


def test_augment_copies_option() -> None:
    from smastream.commands.train import add_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert config_from_args(parser.parse_args([])).augment_copies is None
    cfg = config_from_args(parser.parse_args(["--augment-copies", "3", "--epochs", "8"]))
    assert cfg.augment_copies == 3 and cfg.resolved_augment_copies == 3
    assert TrainConfig(epochs=5).resolved_augment_copies == 5  # one fresh draw per epoch
    assert TrainConfig(epochs=5, augment=False).resolved_augment_copies == 1
    assert TrainConfig(epochs=5, protocol="clip").resolved_augment_copies == 1
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="augment_copies must be an integer >= 1"):
            TrainConfig(augment_copies=bad)

"""Event -> decision latency of the live pipeline at S = 1 vs S = 4, one run (issue 12).

    python benchmarks/bench_event_latency.py [--model engine/models/demo.onnx] [--seconds 20]
        [--threads 2] [--repeat 2]

The model's weights (its ``.pt`` state dict beside it, else recovered from the graph) are
exported at S = 4 into a temporary file; both graphs then replay ``recordings/demo.aedat4``
at 1x through the real pipeline (ONNX Runtime, ``--threads``), alternating. Printed per
run: event -> decision mean / p50 / p99 (event-weighted), window close -> decision p50 /
p99, CPU (share of one core), dropped windows; then the S=1 / S=4 ratio of the mean event
-> decision latency (acceptance: <= 0.35, and window close -> decision p99 <= 8 ms).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from smastream.engine.export import export_onnx, read_metadata, state_dict_from_onnx
from smastream.engine.model import SMASNN, config_from_dict
from smastream.engine.runtime import open_runtime
from smastream.stream.pipeline import Pipeline, PipelineConfig, percentiles
from smastream.stream.sources import FileSource

REPO = Path(__file__).resolve().parents[1]


def run(model: Path, recording: Path, seconds: float, threads: int) -> dict[str, float]:
    source = FileSource(recording, speed=1.0)
    try:
        pipeline = Pipeline(
            source, open_runtime(model, threads=threads), PipelineConfig(seconds=seconds)
        )
        cpu0 = time.process_time()
        stats = pipeline.run()
        cpu = time.process_time() - cpu0
    finally:
        source.close()
    ev = stats.event_latency()
    close = percentiles(stats.end_to_end_ms)
    return {
        "event_mean_ms": ev["mean"],
        "event_p50_ms": ev["p50"],
        "event_p99_ms": ev["p99"],
        "close_p50_ms": close["p50"],
        "close_p99_ms": close["p99"],
        "cpu_core_pct": 100 * cpu / stats.wall_s,
        "dropped": stats.dropped_windows + stats.dropped_results,
        "calls": stats.inferred,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=REPO / "engine" / "models" / "demo.onnx")
    ap.add_argument("--recording", type=Path, default=REPO / "recordings" / "demo.aedat4")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    meta = read_metadata(args.model)
    weights = args.model.with_suffix(".pt")
    if weights.is_file():
        config = config_from_dict(meta["config"])
        state = torch.load(weights, weights_only=True)
    else:
        config, state = state_dict_from_onnx(args.model)
    net = SMASNN(config)
    net.load_state_dict(state)
    with tempfile.TemporaryDirectory() as tmp:
        graphs = {}
        for s in (1, 4):
            graphs[s] = Path(tmp) / f"s{s}.onnx"
            export_onnx(
                net.eval(),
                graphs[s],
                steps_per_window=s,
                bin_us=meta["bin_us"],
                extra=meta.get("checkpoint_extra"),
            )
        for rep in range(args.repeat):
            rows = {s: run(graphs[s], args.recording, args.seconds, args.threads) for s in (1, 4)}
            for s, row in rows.items():
                print(f"run {rep} S={s}: " + json.dumps({k: round(v, 2) for k, v in row.items()}))
            ratio = rows[1]["event_mean_ms"] / rows[4]["event_mean_ms"]
            print(
                f"run {rep}: event->decision mean S=1 / S=4 = {ratio:.3f} (<= 0.35 wanted); "
                f"S=1 window close->decision p99 {rows[1]['close_p99_ms']:.2f} ms (<= 8 wanted)"
            )


if __name__ == "__main__":
    main()

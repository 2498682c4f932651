"""Latency profiling of the live pipeline: per-stage percentiles, resources, Jetson power.

:func:`build_report` turns a run's :class:`~smastream.stream.pipeline.PipelineStats` plus
resource samples into one JSON-ready dict; :func:`summary_text` prints it on one screen;
:func:`plot_histograms` draws the latency histograms (PNG). :class:`ResourceSampler`
samples this process's CPU use and memory, and on a Jetson the power mode
(``nvpmodel -q``) and power draw (``tegrastats``). Elsewhere those readings are reported
as unavailable, with the reason.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from smastream.stream.pipeline import PipelineStats, percentiles

STAGES = ("read", "bin", "infer", "decide", "render")


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process (VmHWM), MB; None where /proc is absent."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    except (ImportError, OSError):
        return None


def is_jetson() -> bool:
    return Path("/etc/nv_tegra_release").exists() or shutil.which("tegrastats") is not None


_POWER = re.compile(r"(VDD_IN|POM_5V_IN|VIN_SYS_5V0)\s+(\d+)(?:mW)?/")


def parse_tegrastats_power(line: str) -> float | None:
    """Total board input power in mW from one tegrastats line: ``VDD_IN 5567mW/5567mW``
    (Orin), ``VIN_SYS_5V0`` (Xavier) or ``POM_5V_IN 2351/2351`` (Nano, mW without unit)."""
    m = _POWER.search(line)
    return float(m.group(2)) if m else None


class ResourceSampler:
    """Samples CPU use and, on a Jetson, power draw while a run goes on."""

    def __init__(self) -> None:
        self._cpu0 = 0.0
        self._wall0 = 0.0
        self.power_mw: list[float] = []
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._cpu0 = time.process_time()
        self._wall0 = time.perf_counter()
        if is_jetson() and shutil.which("tegrastats"):
            self._proc = subprocess.Popen(
                ["tegrastats", "--interval", "500"],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            self._thread = threading.Thread(target=self._read, daemon=True)
            self._thread.start()

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            mw = parse_tegrastats_power(line)
            if mw is not None:
                self.power_mw.append(mw)

    def stop(self) -> dict[str, Any]:
        wall = time.perf_counter() - self._wall0
        cpu = time.process_time() - self._cpu0
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=5)
        out: dict[str, Any] = {
            "cpu_percent": round(100.0 * cpu / wall, 1) if wall > 0 else None,
            "cpu_cores": os.cpu_count(),
            "peak_rss_mb": peak_rss_mb(),
            "machine": f"{platform.machine()} {platform.processor() or platform.system()}",
        }
        out.update(jetson_readings(self.power_mw))
        out["gpu"] = gpu_reading()
        return out


def jetson_readings(power_mw: list[float]) -> dict[str, Any]:
    """Jetson power mode and power draw, or why they are unavailable."""
    if not is_jetson():
        return {"jetson": "unavailable: not a Jetson (no /etc/nv_tegra_release, no tegrastats)"}
    mode = "unavailable: nvpmodel not found"
    if shutil.which("nvpmodel"):
        try:
            mode = subprocess.run(
                ["nvpmodel", "-q"], capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError) as exc:
            mode = f"unavailable: {exc}"
    power: dict[str, Any] = {"samples": len(power_mw)}
    if power_mw:
        power.update(mean_mw=float(np.mean(power_mw)), max_mw=float(np.max(power_mw)))
    return {"jetson": {"power_mode": mode, "power": power}}


def gpu_reading() -> Any:
    """The CUDA device used by torch, if any (torch is optional)."""
    try:
        import torch
    except ImportError:
        return "unavailable: torch not installed"
    if not torch.cuda.is_available():
        return "unavailable: no CUDA device"
    return {
        "name": torch.cuda.get_device_name(0),
        "max_memory_allocated_mb": torch.cuda.max_memory_allocated(0) / 2**20,
    }


def build_report(
    stats: PipelineStats, resources: dict[str, Any], info: dict[str, Any]
) -> dict[str, Any]:
    """Everything ``profile`` writes, as one JSON-ready dict (milliseconds)."""
    stages = {
        name: percentiles(getattr(stats, f"{name}_ms")) | {"n": len(getattr(stats, f"{name}_ms"))}
        for name in STAGES
    }
    speed = stats.sensor_s / stats.wall_s if stats.wall_s > 0 else 0.0
    return {
        "model": info,
        "stages_ms": stages,
        "end_to_end_ms": percentiles(stats.end_to_end_ms) | {"n": len(stats.end_to_end_ms)},
        # event -> decision, weighted by events (the wait for the bin to close included)
        "event_to_decision_ms": stats.event_latency()
        | {"windows": len(stats.event_weight), "events": int(sum(stats.event_weight))},
        "throughput": {
            "windows": stats.inferred,
            "windows_per_s": stats.inferred / stats.wall_s if stats.wall_s > 0 else 0.0,
            "events": stats.events,
            "events_per_s": stats.events / stats.wall_s if stats.wall_s > 0 else 0.0,
            "real_time_factor": speed,
        },
        "dropped_windows": stats.dropped_windows + stats.dropped_results,
        "display_frames": stats.display_frames,
        "dropped_display_frames": stats.dropped_display_frames,
        "lost_packets": stats.lost_packets,
        "resets": stats.resets,
        "resources": resources,
        "wall_s": stats.wall_s,
    }


def summary_text(report: dict[str, Any]) -> str:
    """The one-screen summary."""
    lines = [f"model: {report['model']}", "", f"{'stage':<14}{'p50':>9}{'p95':>9}{'p99':>9}  ms"]
    for name, row in report["stages_ms"].items():
        lines.append(f"{name:<14}{row['p50']:>9.2f}{row['p95']:>9.2f}{row['p99']:>9.2f}")
    e = report["end_to_end_ms"]
    lines.append(f"{'end-to-end':<14}{e['p50']:>9.2f}{e['p95']:>9.2f}{e['p99']:>9.2f}")
    ev = report["event_to_decision_ms"]
    lines.append(
        f"{'event->dec.':<14}{ev['p50']:>9.2f}{'':>9}{ev['p99']:>9.2f}  "
        f"(event-weighted; mean {ev['mean']:.2f})"
    )
    t = report["throughput"]
    r = report["resources"]
    lines += [
        "",
        f"windows {t['windows']} ({t['windows_per_s']:.1f}/s, {t['real_time_factor']:.2f}x "
        f"real time), events {t['events']} ({t['events_per_s'] / 1e6:.3f} Mev/s)",
        f"dropped windows {report['dropped_windows']}, display frames "
        f"{report['display_frames']} ({report['dropped_display_frames']} dropped), "
        f"lost packets {report['lost_packets']}, "
        f"resets {report['resets']}",
        f"CPU {r['cpu_percent']}% of one core ({r['cpu_cores']} cores), "
        f"peak RSS {r['peak_rss_mb']:.0f} MB",
        f"GPU: {r['gpu']}",
        f"Jetson: {r['jetson']}",
    ]
    return "\n".join(lines)


def plot_histograms(stats: PipelineStats, path: Path, title: str = "") -> None:
    """Latency histograms per stage and end to end, as a PNG (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: list[tuple[str, Any, Any]] = [(n, getattr(stats, f"{n}_ms"), None) for n in STAGES] + [
        ("window close -> decision", stats.end_to_end_ms, None)
    ]
    if stats.event_q_ms:  # each window's quantile samples carry its events / quantiles
        q = np.concatenate(list(stats.event_q_ms))
        w = np.repeat(
            np.asarray(stats.event_weight) / len(stats.event_q_ms[0]), len(stats.event_q_ms[0])
        )
        series.append(("event -> decision (event-weighted)", q, w))
    else:
        series.append(("event -> decision (event-weighted)", [], None))
    fig, axes = plt.subplots(2, 4, figsize=(16, 6.5))
    axes.flat[-1].axis("off")
    for ax, (name, values, weights) in zip(axes.flat, series, strict=False):
        if len(values):
            ax.hist(values, bins=40, color="#4c72b0", weights=weights)
            if weights is None:
                p50, p99 = np.percentile(values, [50, 99])
            else:
                ev = stats.event_latency()
                p50, p99 = ev["p50"], ev["p99"]
            ax.axvline(p50, color="k", lw=1, label=f"p50 {p50:.2f}")
            ax.axvline(p99, color="r", lw=1, label=f"p99 {p99:.2f}")
            ax.legend(fontsize=8)
        ax.set_title(name)
        ax.set_xlabel("ms")
    fig.suptitle(title or "smastream latency")
    fig.tight_layout()
    tmp = path.with_name(path.name + ".part.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)

"""PNG plots of a training run (matplotlib, Agg backend: no display needed).

* :func:`plot_history`: ``loss.png`` and ``accuracy.png`` from the per-epoch metrics.
* :func:`plot_confusion`: a confusion matrix (counts, rows = true class, row-normalised
  colours).

Files are written under a temporary name and renamed, like every other output.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["plot_confusion", "plot_history"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    try:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def plot_history(history: Sequence[Mapping[str, Any]], out_dir: str | Path) -> list[Path]:
    """Write ``loss.png`` and ``accuracy.png`` (train and validation per epoch).

    Args:
        history: Per-epoch dicts with ``epoch``, ``train_loss``, ``train_accuracy`` and
            optional ``val_loss``, ``val_accuracy`` (None when absent).
        out_dir: Destination folder.

    Returns:
        The two paths.
    """
    plt = _pyplot()
    out = Path(out_dir)
    paths = []
    epochs = [int(h["epoch"]) + 1 for h in history]
    for key, title in (("loss", "loss"), ("accuracy", "accuracy")):
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot(epochs, [h[f"train_{key}"] for h in history], "o-", label="train")
        val = [(e, h.get(f"val_{key}")) for e, h in zip(epochs, history, strict=True)]
        val = [(e, v) for e, v in val if v is not None]
        if val:
            ax.plot([e for e, _ in val], [v for _, v in val], "s-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(title)
        if key == "accuracy":
            ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend()
        path = out / f"{key}.png"
        _save(fig, path)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_confusion(
    matrix: npt.ArrayLike,
    row_names: Sequence[str],
    col_names: Sequence[str],
    path: str | Path,
    title: str = "confusion",
) -> Path:
    """Write a confusion matrix PNG.

    Args:
        matrix: ``[R, C]`` counts, rows = true class, columns = prediction.
        row_names, col_names: Axis labels (``R`` and ``C`` of them).
        path: Destination file.
        title: Figure title.

    Raises:
        ValueError: names that do not match the matrix shape.
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape != (len(row_names), len(col_names)):
        raise ValueError(
            f"matrix shape {m.shape} does not match {len(row_names)} row and "
            f"{len(col_names)} column names"
        )
    plt = _pyplot()
    rows = m.sum(axis=1, keepdims=True)
    norm = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    fig, ax = plt.subplots(figsize=(1 + 0.55 * len(col_names), 1 + 0.5 * len(row_names)))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(col_names)), col_names, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(row_names)), row_names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            if m[i, j]:
                ax.text(
                    j,
                    i,
                    f"{int(m[i, j])}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
    out = Path(path)
    _save(fig, out)
    plt.close(fig)
    return out

"""A non-editable install carries the shipped model (ONNX, card and the weights that
fine-tuning starts from) and the demo recording: a real ``pip install --target``."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = {
    "engine/models": "smastream/engine/models",
    "recordings": "smastream/recordings",
}


def test_a_wheel_install_has_every_shipped_model_and_recording_file(tmp_path: Path) -> None:
    # from a copy of the source: an in-tree build/ of an earlier install would hide a
    # file that the package data no longer names
    src_tree = tmp_path / "src"
    shutil.copytree(
        ROOT,
        src_tree,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "runs", "*.egg-info", "*_cache", "__pycache__"
        ),
    )
    target = tmp_path / "site"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(src_tree),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    for src, dst in SHIPPED.items():
        wanted = sorted(p.name for p in (ROOT / src).iterdir() if p.is_file() and p.suffix != ".py")
        assert wanted, src
        got = {p.name for p in (target / dst).iterdir()}
        missing = [name for name in wanted if name not in got]
        assert not missing, f"{src}: {missing} not in the installed package"
    assert (target / "smastream/engine/models/demo.pt").stat().st_size == (
        ROOT / "engine/models/demo.pt"
    ).stat().st_size

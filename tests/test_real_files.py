"""The shipped demo model on real recordings where nobody gestures (issue 13's acceptance).

Every real AEDAT and Prophesee file of ``../shared/data/real`` (any file whose header the
readers know; at least the ones issue 13 names) is replayed through the real pipeline,
in-process, as ``smastream replay FILE --no-display --as-fast-as-possible --predictions
X.jsonl --model engine/models/demo.onnx``. None of them holds a gesture, so a gesture may be
decided on at most 5 % of each file's steps.
"""

from __future__ import annotations

import json
from pathlib import Path

from smastream.cli import main
from smastream.errors import FormatError
from smastream.gestures import NO_GESTURE
from smastream.stream.formats import sniff_format

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "real"
MODEL = REPO / "engine" / "models" / "demo.onnx"
MAX_GESTURE_SHARE = 0.05
#: The files issue 13 names (every AEDAT file, the Prophesee files): they must be found.
NAMED = {
    "aestream/davis.aedat4": "aedat4",
    "tonic/sample.aedat4": "aedat4",
    "expelliarmus/evt2_sample.raw": "evt2",
    "expelliarmus/evt3_sample.raw": "evt3",
    "faery/evt2.raw": "evt2",
    "tonic/sample_ncars.dat": "dat",
}


def _real_event_files() -> dict[str, str]:
    """``relative path -> format`` of every file under :data:`REAL` that a reader takes."""
    found = {}
    for path in sorted(p for p in REAL.rglob("*") if p.is_file()):
        try:
            fmt = sniff_format(path)
        except FormatError:
            continue  # SOURCES.md, the label CSV, N-MNIST .bin, the reference .npy
        if fmt.startswith("aedat") or fmt in ("evt2", "evt3", "dat"):
            found[str(path.relative_to(REAL))] = fmt
    return found


def _decided_names(path: Path, out: Path) -> list[str]:
    rc = main(
        [
            "replay",
            str(path),
            "--no-display",
            "--as-fast-as-possible",
            "--predictions",
            str(out),
            "--model",
            str(MODEL),
            "--quiet",
        ]
    )
    assert rc == 0, path
    return [json.loads(line)["name"] for line in out.read_text().splitlines()]


def test_every_named_real_file_is_found_and_read() -> None:
    found = _real_event_files()
    assert {k: found.get(k) for k in NAMED} == NAMED


def test_shipped_model_decides_almost_no_gesture_on_real_files(tmp_path: Path) -> None:
    over = {}
    for rel in _real_event_files():
        names = _decided_names(REAL / rel, tmp_path / (Path(rel).name + ".jsonl"))
        assert names, f"{rel}: no step decided"
        gestures = [n for n in names if n != NO_GESTURE]
        if len(gestures) > MAX_GESTURE_SHARE * len(names):
            over[rel] = f"{len(gestures)} of {len(names)} steps: {sorted(set(gestures))}"
    assert not over, over

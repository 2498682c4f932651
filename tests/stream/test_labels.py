from __future__ import annotations

from pathlib import Path

import pytest

from smastream.errors import FormatError
from smastream.stream.formats.labels import (
    GestureWindow,
    labels_path_for,
    read_labels,
    write_labels,
)


def test_real_label_file(real_data: Path) -> None:
    labels = read_labels(real_data / "aestream" / "user01_natural_labels.csv")
    assert len(labels) == 12
    assert labels.repeated_classes == {7: 2}  # class 8 (arm roll) twice, 0-based 7
    assert labels.windows[0] == GestureWindow(53036986, 59508469, 0)
    assert labels.windows[0].name == "hand clap"
    assert min(w.start_us for w in labels) == 53036986
    assert {w.label for w in labels} == set(range(11))


def test_round_trip_keeps_repeats_and_overlaps(tmp_path: Path) -> None:
    windows = [
        GestureWindow(100, 500, 8),
        GestureWindow(400, 900, 9),  # overlaps the previous one, as in user22_led
        GestureWindow(1000, 2000, 8),  # class repeated
    ]
    path = tmp_path / "rec_labels.csv"
    write_labels(path, windows)
    assert path.read_text().splitlines()[:2] == ["class,startTime_usec,endTime_usec", "9,100,500"]
    labels = read_labels(path)
    assert labels.windows == windows
    assert labels.overlaps == [(windows[0], windows[1])]
    assert labels.repeated_classes == {8: 2}
    assert not list(tmp_path.glob("*.part"))


def test_labels_path_for() -> None:
    assert labels_path_for("a/user01_natural.aedat") == Path("a/user01_natural_labels.csv")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "empty"),
        ("cls,start,end\n1,2,3\n", "header"),
        ("class,startTime_usec,endTime_usec\n12,0,10\n", "class 12"),
        ("class,startTime_usec,endTime_usec\n1,10,10\n", "not after"),
        ("class,startTime_usec,endTime_usec\n1,abc,10\n", "3 integers"),
        ("class,startTime_usec,endTime_usec\n1,--5,10\n", "3 integers"),
        ("class,startTime_usec,endTime_usec\n1,\u00b2,10\n", "3 integers"),  # isdigit() is true
        ("class,startTime_usec,endTime_usec\n1,0,99999999999999999999\n", "64-bit"),
    ],
)
def test_bad_label_files(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad_labels.csv"
    path.write_text(text)
    with pytest.raises(FormatError, match=match) as err:
        read_labels(path)
    assert str(path) in str(err.value)


def test_write_labels_failure_leaves_nothing(tmp_path: Path) -> None:
    from smastream.stream.formats.base import WriteError
    from smastream.stream.formats.labels import GestureWindow, write_labels

    target = tmp_path / "x_labels.csv"
    target.mkdir()  # replacing a folder fails after the .part file is written
    with pytest.raises(WriteError, match="cannot write"):
        write_labels(target, [GestureWindow(0, 10, 0)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x_labels.csv"]


def test_scene_file_round_trip_and_bad_rows(tmp_path: Path) -> None:
    from smastream.stream.formats.labels import (
        SceneSegment,
        read_scenes,
        scenes_path_for,
        write_scenes,
    )
    from smastream.stream.synthetic import SynthConfig, SyntheticGestures

    gen = SyntheticGestures(SynthConfig(seconds=30.0, seed=5))
    path = scenes_path_for(tmp_path / "rec.aedat4")
    assert path.name == "rec_scenes.csv"
    write_scenes(path, gen.scenes)
    back = read_scenes(path)
    assert back == gen.scenes and all(isinstance(s, SceneSegment) for s in back)
    assert {s.name for s in back} > {"idle"}  # scenes between the gestures
    for text, match in [
        ("", "empty scene file"),
        ("class,startTime_usec,endTime_usec\n", "header"),
        ("scene,startTime_usec,endTime_usec\nwalk,5,5\n", "not after start"),
        ("scene,startTime_usec,endTime_usec\nWalk!,1,5\n", "line 2: expected a scene name"),
        ("scene,startTime_usec,endTime_usec\nwalk,1,2,3\n", "line 2"),
    ]:
        path.write_text(text)
        with pytest.raises(FormatError, match=match):
            read_scenes(path)

"""IBM DVS128 Gesture, raw: download, verify, extract, and the official train/test split.

The dataset (Amir et al., CVPR 2017; CC BY 4.0) is one archive, ``DvsGesture.tar.gz``
(md5 ``8a5c71fb11e24e5ca5b11866ca6c00a1``), holding the raw AEDAT 3.1 trials
``DvsGesture/userNN_<lighting>.aedat``, their ``_labels.csv`` files and the split lists
``trials_to_train.txt`` / ``trials_to_test.txt`` (users 1-23 train, 24-29 test).
IBM publishes it on a Box folder page that has no direct link; KTH mirrors the same
archive (same md5) at a direct link, used by norse. tonic's ``DVSGesture`` downloads
tonic's own preprocessed copy (one ``.npy`` per gesture, ``t`` in ms), not these trials.

Downloads go to ``<name>.part``; an interrupted download resumes with an HTTP Range
request; the file gets its final name only after its md5 matches. When no host answers,
the error names the URL and says how to download by hand and pass ``--data PATH``.
"""

from __future__ import annotations

import hashlib
import http.client
import re
import shutil
import sys
import tarfile
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path

from smastream.errors import FormatError, SmastreamError
from smastream.stream.formats import sniff_format
from smastream.stream.formats.labels import labels_path_for

from .datasets import Recording, check_label_span

__all__ = [
    "ARCHIVE_MD5",
    "ARCHIVE_NAME",
    "ARCHIVE_URLS",
    "MANUAL_PAGE",
    "SPLITS",
    "TEST_USERS",
    "TRAIN_USERS",
    "download",
    "dvsgesture_recordings",
    "extract_archive",
    "file_md5",
    "prepare_dvsgesture",
    "trial_user",
]

ARCHIVE_NAME = "DvsGesture.tar.gz"
ARCHIVE_MD5 = "8a5c71fb11e24e5ca5b11866ca6c00a1"
"""md5 of IBM's ``DvsGesture.tar.gz`` (as listed by spikingjelly, tonic's old loader, norse)."""
ARCHIVE_URLS: tuple[str, ...] = (
    "https://kth.box.com/shared/static/7fk64kjuit6exwlzbzfetwoa93qsuoy4.gz",
)
"""Direct links to the raw archive (KTH mirror of IBM's file, same md5)."""
MANUAL_PAGE = "https://ibm.ent.box.com/s/3hiq58ww1pbbjrinh367ykfdf60xsfm8/folder/50167556794"
"""IBM's own download page (a Box folder: needs a browser)."""
DATA_DIR = "DvsGesture"
SPLITS = ("train", "test")
TRAIN_USERS = range(1, 24)
TEST_USERS = range(24, 30)

_CHUNK = 1 << 20
_TRIAL = re.compile(r"^user(\d+)_", re.IGNORECASE)


def file_md5(path: str | Path) -> str:
    """Hex md5 of a file, read in 1 MiB blocks."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def _manual_hint() -> str:
    return (
        f"download {ARCHIVE_NAME} by hand (e.g. from {MANUAL_PAGE}), extract it and "
        "pass --data PATH to its DvsGesture folder"
    )


class _Progress:
    """A tqdm bar when available and wanted, else nothing."""

    def __init__(self, total: int | None, initial: int, enabled: bool, desc: str) -> None:
        self._bar = None
        if enabled:
            try:
                from tqdm import tqdm

                self._bar = tqdm(
                    total=total,
                    initial=initial,
                    unit="B",
                    unit_scale=True,
                    desc=desc,
                    file=sys.stderr,
                )
            except ImportError:
                pass

    def update(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def download(
    url: str,
    dest: str | Path,
    *,
    md5: str | None = None,
    timeout_s: float = 30.0,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest``, resuming ``dest.part`` and verifying the md5.

    An existing ``dest`` whose md5 matches is kept as it is. Otherwise the bytes go to
    ``<dest>.part``: if it exists, the download resumes from its size (HTTP Range; a
    server that ignores Range restarts it from zero). ``dest`` appears only once the
    whole file is there and its md5 matches.

    Args:
        url: ``http(s)://`` URL.
        dest: Final path.
        md5: Expected hex md5, or ``None`` to skip the check.
        timeout_s: Socket timeout.
        progress: Show a progress bar.

    Returns:
        ``dest``.

    Raises:
        SmastreamError: unreachable host or HTTP error (names the URL and the manual
            way), an interrupted transfer (the ``.part`` file is kept: run again to
            resume), or an md5 mismatch (the ``.part`` file is removed).
    """
    dest = Path(dest)
    want = md5.lower() if md5 else None
    if dest.is_file() and (want is None or file_md5(dest) == want):
        return dest
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": "smastream"}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to send: the .part may be complete
            return _finish(part, dest, want, url)
        raise SmastreamError(
            f"cannot download {url}: HTTP {exc.code} {exc.reason}; {_manual_hint()}"
        ) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise SmastreamError(f"cannot reach {url}: {reason}; {_manual_hint()}") from None
    with response:
        status = response.status
        length = response.headers.get("Content-Length")
        if status == 206:
            content_range = response.headers.get("Content-Range", "")
            m = re.match(r"bytes (\d+)-\d+/(\d+|\*)", content_range)
            if not m or int(m.group(1)) != have:
                raise SmastreamError(
                    f"cannot resume {url}: asked for bytes {have}- but the server sent "
                    f"{content_range!r}; delete {part} and run again"
                )
            mode = "ab"
            total = int(m.group(2)) if m.group(2) != "*" else None
        else:
            mode, have = "wb", 0  # the server ignored Range: start over
            total = int(length) if length is not None else None
        bar = _Progress(total, have, progress, dest.name)
        got = have
        try:
            with open(part, mode) as f:
                while block := response.read(_CHUNK):
                    f.write(block)
                    got += len(block)
                    bar.update(len(block))
        except (OSError, http.client.HTTPException) as exc:
            raise SmastreamError(
                f"download of {url} interrupted after {got} bytes ({exc!r}); "
                f"run again to resume from {part}"
            ) from None
        finally:
            bar.close()
        if total is not None and got < total:
            raise SmastreamError(
                f"download of {url} stopped at {got} of {total} bytes; "
                f"run again to resume from {part}"
            )
    return _finish(part, dest, want, url)


def _finish(part: Path, dest: Path, want: str | None, url: str) -> Path:
    if want is not None:
        got = file_md5(part)
        if got != want:
            part.unlink()
            raise SmastreamError(
                f"checksum mismatch for {url}: md5 {got}, expected {want}; removed the "
                f"download, run again or {_manual_hint()}"
            )
    part.replace(dest)
    return dest


def extract_archive(archive: str | Path, dest_dir: str | Path) -> Path:
    """Extract a ``.tar.gz`` into ``dest_dir`` through a temporary folder.

    Members are extracted with tarfile's ``data`` filter (no absolute paths, no links out
    of the folder). Each top-level entry is moved into ``dest_dir`` only when the whole
    archive has been extracted, so an interrupted run leaves no half-extracted folder
    under its final name.

    Returns:
        ``dest_dir``.

    Raises:
        FormatError: a damaged archive (names it).
    """
    archive, dest = Path(archive), Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    tmp = dest / f".extract-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(tmp, filter="data")
                else:  # Python < 3.10.12: refuse what the data filter would refuse
                    for member in tar.getmembers():
                        name = Path(member.name)
                        if (
                            name.is_absolute()
                            or ".." in name.parts
                            or not (member.isfile() or member.isdir())
                        ):
                            raise tarfile.TarError(f"unsafe member {member.name!r}")
                    tar.extractall(tmp)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise FormatError(archive, None, f"cannot extract: {exc}") from None
        for item in tmp.iterdir():
            target = dest / item.name
            if target.exists():
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            item.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _is_data_dir(path: Path) -> bool:
    return (path / "trials_to_train.txt").is_file() or any(path.glob("user*_*.aedat"))


def prepare_dvsgesture(
    root: str | Path,
    *,
    download_missing: bool = True,
    urls: Sequence[str] = ARCHIVE_URLS,
    md5: str | None = ARCHIVE_MD5,
    timeout_s: float = 30.0,
    progress: bool = True,
) -> Path:
    """Make sure the raw trials are under ``root``; return the folder that holds them.

    ``root`` may be the ``DvsGesture`` folder itself (``--data PATH``), a folder holding
    it, or a folder holding ``DvsGesture.tar.gz`` (or where it should be downloaded).

    Raises:
        SmastreamError: nothing there and downloading is off or every URL failed (the
            message names the URL and the manual way).
    """
    root = Path(root)
    for candidate in (root, root / DATA_DIR):
        if candidate.is_dir() and _is_data_dir(candidate):
            return candidate
    archive = root / ARCHIVE_NAME
    if not archive.is_file() or (md5 is not None and file_md5(archive) != md5.lower()):
        if not download_missing:
            raise SmastreamError(f"{root}: no DVS128 Gesture data; {_manual_hint()}")
        if not urls:
            raise SmastreamError(f"no download URL given; {_manual_hint()}")
        errors = []
        for url in urls:
            try:
                download(url, archive, md5=md5, timeout_s=timeout_s, progress=progress)
                break
            except SmastreamError as exc:
                errors.append(exc)
        else:
            raise (
                errors[-1]
                if len(errors) == 1
                else SmastreamError("; ".join(str(e) for e in errors))
            )
    extract_archive(archive, root)
    data = root / DATA_DIR
    if not _is_data_dir(data):
        raise FormatError(archive, None, f"no {DATA_DIR}/trials_to_train.txt or user trials inside")
    return data


def trial_user(name: str) -> int:
    """The user number of a trial name (``user01_natural.aedat`` -> 1).

    Raises:
        ValueError: not a ``userNN_...`` name.
    """
    m = _TRIAL.match(Path(name).name)
    if not m:
        raise ValueError(f"not a DVS Gesture trial name (userNN_lighting.aedat): {name!r}")
    return int(m.group(1))


def dvsgesture_recordings(
    root: str | Path, split: str = "train", *, check_span: bool = False
) -> list[Recording]:
    """The official split of the raw trials in ``root`` (the ``DvsGesture`` folder).

    The trials come from ``trials_to_<split>.txt`` when present, else from every
    ``userNN_*.aedat`` by user number (1-23 train, 24-29 test).

    Args:
        root: The folder with the trials (see :func:`prepare_dvsgesture`).
        split: ``"train"`` or ``"test"``.
        check_span: Also check every label window lies inside its recording.

    Raises:
        ValueError: an unknown ``split``.
        SmastreamError: ``root`` is missing, or a listed trial or its label file is.
        FormatError: a trial that is not an AEDAT file, or a bad label file (names it).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    root = Path(root)
    if not root.is_dir():
        raise SmastreamError(f"{root}: no such folder; {_manual_hint()}")
    listing = root / f"trials_to_{split}.txt"
    if listing.is_file():
        names = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
        paths = [root / name for name in names]
    else:
        users = TRAIN_USERS if split == "train" else TEST_USERS
        paths = sorted(
            p
            for p in root.glob("user*_*.aedat")
            if _TRIAL.match(p.name) and trial_user(p.name) in users
        )
    missing = [p for p in paths if not p.is_file()]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise SmastreamError(f"{missing[0]}: trial file missing{more} (listed in {listing.name})")
    out = []
    for path in paths:
        fmt = sniff_format(path)  # raises FormatError naming the file
        if fmt != "aedat3.1":
            raise FormatError(path, None, f"expected an AEDAT 3.1 trial, found {fmt}")
        labels = labels_path_for(path)
        if not labels.is_file():
            raise SmastreamError(f"{labels}: label file missing for trial {path.name}")
        rec = Recording(path, labels)
        if check_span:
            check_label_span(rec)
        out.append(rec)
    return out

"""``smastream keys DIR [--name NAME] [--force]``: make a CURVE key pair for the transport.

Writes ``DIR/NAME.key`` (public: give it to the other side) and ``DIR/NAME.key_secret``
(secret: keep it, mode 0600). A publisher uses ``server.key_secret``; its subscribers need
``server.key``. To let only known clients in, make a pair per client
(``--name laptop``) and copy each client's public ``.key`` into the publisher's clients
folder.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from smastream.errors import SmastreamError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def key_name(text: str) -> str:
    """argparse type: a file-name-safe key name such as ``server`` or ``laptop-1``."""
    if not _NAME.match(text) or text.endswith((".key", ".key_secret")):
        raise argparse.ArgumentTypeError(
            f"invalid key name {text!r}: use letters, digits, '_', '-', '.', e.g. server"
        )
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", type=Path, help="folder for the key files (created if missing)")
    parser.add_argument(
        "--name", type=key_name, default="server", help="base name of the files (server)"
    )
    parser.add_argument(
        "--force", action="store_true", help="overwrite an existing key pair of that name"
    )


def create_keypair(directory: Path, name: str = "server", force: bool = False) -> tuple[Path, Path]:
    """Write a CURVE key pair; returns ``(public_file, secret_file)``.

    Raises:
        SmastreamError: the files exist and ``force`` is False, or ``directory`` is a file.
    """
    import zmq
    import zmq.auth

    if not zmq.has("curve"):
        raise SmastreamError("this libzmq was built without CURVE support")
    directory = Path(directory)
    public = directory / f"{name}.key"
    secret = directory / f"{name}.key_secret"
    existing = [str(p) for p in (public, secret) if p.exists()]
    if existing and not force:
        raise SmastreamError(
            f"{' and '.join(existing)} already exist; pass --force to replace them "
            "(every client holding the old public key will be locked out)"
        )
    if directory.exists() and not directory.is_dir():
        raise SmastreamError(f"{directory} exists and is not a folder")
    done = False
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for p in (public, secret):
            p.unlink(missing_ok=True)
        pub_file, sec_file = zmq.auth.create_certificates(directory, name)
        Path(sec_file).chmod(0o600)
        done = True
    except OSError as exc:
        # A full disk or a read-only folder: one line, and no empty or half key file left.
        raise SmastreamError(
            f"{exc.filename or directory}: cannot write the key pair: {exc.strerror or exc}"
        ) from None
    finally:
        if not done:
            for p in (public, secret):
                p.unlink(missing_ok=True)
    return Path(pub_file), Path(sec_file)


def run(args: argparse.Namespace) -> int:
    public, secret = create_keypair(args.dir, args.name, args.force)
    print(f"public key: {public}  (give to the other side)")
    print(f"secret key: {secret}  (keep private)")
    return 0

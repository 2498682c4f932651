"""``smastream <command> --help`` works for every command (argparse formats each help
string with ``%``: a bare ``%`` in one crashed ``train --help``)."""

from __future__ import annotations

import pytest

from smastream.cli import COMMANDS, main


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_prints_its_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    captured = capsys.readouterr()
    assert f"usage: smastream {command}" in captured.out
    assert COMMANDS[command] in " ".join(captured.out.split())  # the description
    assert captured.err == ""

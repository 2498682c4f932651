"""flush_denormal restores the mode the caller had, not a fixed default (issue 11 item 20)."""

import torch

from engine.torch_runtime import flush_denormal, flush_denormal_enabled


def test_flush_denormal_restores_previous_mode() -> None:
    if not torch.set_flush_denormal(False):
        import pytest

        pytest.skip("this CPU cannot flush denormals")
    try:
        assert not flush_denormal_enabled()
        with flush_denormal():
            assert flush_denormal_enabled()
        assert not flush_denormal_enabled()
        torch.set_flush_denormal(True)
        with flush_denormal():
            assert flush_denormal_enabled()
        assert flush_denormal_enabled(), "a caller's own flush mode was switched off"
        with flush_denormal(), flush_denormal():
            pass
        assert flush_denormal_enabled()
    finally:
        torch.set_flush_denormal(False)

"""Shared fixtures for the interop tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def one_thread():
    """Tiny models run ~100x faster on one thread than on two contended ones (intra-op threads
    spin while other processes hold the cores); the previous setting is restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

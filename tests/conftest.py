"""Fixtures every test shares."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run up to ~100x faster on one thread than on two contended ones (intra-op
    threads spin while other processes hold the cores: CI has 2 cores); the previous setting
    is restored after, for the few tests that time or compare thread counts themselves."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

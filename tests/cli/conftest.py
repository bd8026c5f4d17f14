"""Fixtures of the CLI tests."""

from __future__ import annotations

import pytest

from seqformer.data import speech


@pytest.fixture
def audio_cache(tmp_path_factory, monkeypatch):
    """Synthesised audio and features cached for this test session only (never the user's
    ~/.cache), and espeak-ng found on PATH whatever the environment says."""
    monkeypatch.setenv("SEQFORMER_CACHE", str(tmp_path_factory.getbasetemp() / "audio-cache"))
    monkeypatch.delenv(speech.ESPEAK_ENV, raising=False)

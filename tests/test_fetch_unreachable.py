"""Without network, a released file that is not cached fails at once with the clear message, each warning once;
one that is in huggingface_hub's cache still loads. (Before: ~25 s of huggingface_hub's retries, each twice.)"""

from __future__ import annotations

import logging
import socket
import time

import pytest

from titok import fetch as fetch_module
from titok.errors import MissingFileError
from titok.fetch import HubFile, fetch

SOURCE = HubFile("someone/tokenizer_x", ("model.safetensors", "pytorch_model.bin"))


@pytest.fixture
def dead_hub(tmp_path, monkeypatch):
    """HF_ENDPOINT on a loopback port nobody listens on (connection refused: what huggingface_hub retries)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TITOK_CACHE", str(tmp_path / "ours"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(fetch_module, "_reachable_hosts", {})
    return tmp_path


def test_missing_file_fails_fast_with_the_message_and_each_warning_once(dead_hub, caplog, capfd):
    start = time.monotonic()
    with caplog.at_level(logging.DEBUG), pytest.raises(MissingFileError) as err:
        fetch(SOURCE)
    elapsed = time.monotonic() - start
    assert elapsed < 5, f"{elapsed:.1f} s: retried against an unreachable hub"
    msg = str(err.value)
    assert "unreachable" in msg and "no connection to 127.0.0.1" in msg
    assert str(dead_hub / "ours" / "hub" / "someone" / "tokenizer_x" / "model.safetensors") in msg
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    said += [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert not [line for line in said if "Retry" in line], said
    assert len(said) == len(set(said)), said  # nothing twice


def test_the_network_is_asked_once_per_process(dead_hub, monkeypatch):
    calls = []
    real = socket.create_connection
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: calls.append(a) or real(*a, **k))
    for _ in range(3):
        with pytest.raises(MissingFileError):
            fetch(SOURCE)
    assert len(calls) == 1


def test_a_file_in_the_hub_cache_still_loads_without_network(dead_hub):
    repo = dead_hub / "hf" / "models--someone--tokenizer_x"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "pytorch_model.bin").write_bytes(b"weights")  # the second name: the first is not cached
    start = time.monotonic()
    assert fetch(SOURCE).read_bytes() == b"weights"
    assert time.monotonic() - start < 5

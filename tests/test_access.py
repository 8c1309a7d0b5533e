"""Websocket access checks on hostile names: loopback means IP literals and localhost only."""

from __future__ import annotations

import pytest

from tracker.serve.access import is_loopback, origin_allowed


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.8.9.10", True), ("localhost", True), ("LOCALHOST.", True),
    ("::1", True), ("[::1]", True), ("::ffff:127.0.0.1", True),
    ("127.0.0.1.evil.example", False), ("127.evil.example", False), ("localhost.evil", False),
    ("128.0.0.1", False), ("0.0.0.0", False), ("::", False), ("10.0.0.1", False),
    ("evil.example", False), ("", False), ("127", False),
])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("origin, allowed", [
    ("http://127.0.0.1:8000", True),
    ("http://localhost:3000", True),
    ("http://[::1]:8080", True),
    ("http://127.0.0.1.evil.example", False),  # a DNS name that only looks like loopback
    ("https://127.0.0.1.nip.io", False),
    ("http://evil.example", False),
    ("file://", False),
])
def test_default_origin_check_refuses_lookalike_names(origin: str, allowed: bool) -> None:
    assert origin_allowed(origin, "127.0.0.1:8765", ()) is allowed

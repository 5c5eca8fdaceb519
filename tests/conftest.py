"""Shared fixtures: generated pose records, no network.

Sockets to anything but loopback are refused, so a test can never download weights or data
(loopback stays open for torch.distributed's gloo rendezvous).
"""

from __future__ import annotations

import socket

import pytest

from tests.helpers import make_index, make_record

_real_connect = socket.socket.connect


def _guarded_connect(self, address):  # noqa: ANN001
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, str) and host not in ("127.0.0.1", "localhost", "::1", "0.0.0.0") and not host.startswith("/"):
        raise RuntimeError(f"network access blocked in tests: {address!r}")
    return _real_connect(self, address)


socket.socket.connect = _guarded_connect


@pytest.fixture
def record() -> dict:
    return make_record()


@pytest.fixture
def index() -> dict:
    return make_index()

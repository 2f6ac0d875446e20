"""Shared fixtures for the end-to-end tests: every service is real and stopped by PID on teardown."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.services import Milvus, Moto  # noqa: E402


@pytest.fixture(scope="module")
def milvus():
    """A real Milvus 2.3.5 standalone per test module (it binds fixed ports: one at a time)."""
    server = Milvus()
    yield server
    server.stop()


@pytest.fixture
def moto():
    server = Moto()
    yield server
    server.stop()

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


@pytest.fixture(autouse=True, scope="module")
def _fresh_pymilvus_connections():
    """pymilvus keeps its connections in the process: a module must not inherit one to a Milvus
    (and port) that an earlier module started and stopped."""
    yield
    try:
        from pymilvus import connections
    except ImportError:
        return
    for alias, _ in connections.list_connections():
        connections.disconnect(alias)
        connections.remove_connection(alias)

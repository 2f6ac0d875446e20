"""Scrape targets: a `dns+http://` name is expanded to every address it resolves to, a failing target
is reported while the others still count, and an unresolvable name is reported, not fatal."""
from __future__ import annotations

import socket

from harness.exporter import StaticExporter, fixture
from harness.procs import free_port, wait_until
from harness.services import Scaler, scaler_signal


def localhost_addresses() -> set[str]:
    return {info[4][0] for info in socket.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)}


def test_dns_target_expands_and_failures_are_per_target():
    exporter = StaticExporter(fixture("milvus-2.3.5-metrics-under-load.prom"))
    dead_port = free_port()  # nothing listens here
    scaler = Scaler({
        "milvus": [{"name": "demo", "scrape": {"interval": "1s", "targets": [
            f"dns+http://localhost:{exporter.port}/metrics",
            f"http://127.0.0.1:{dead_port}/metrics",
            "dns+http://no-such-host.invalid:9091/metrics",
        ]}}],
        "signals": {"window": "10s", "stale_after": "5s"},
    })
    try:
        wait_until(lambda: scaler_signal(scaler, "demo", "loaded_entities") == 250_000, 20,
                   "signals from the one live target")
        text = scaler.metrics_text()
        assert f'milvus_scaler_target_up{{target="http://127.0.0.1:{exporter.port}/metrics"}} 1' in text
        assert f'milvus_scaler_target_up{{target="http://127.0.0.1:{dead_port}/metrics"}} 0' in text
        # Every address of the name is a target (::1 too where localhost has it; nothing listens there).
        if "::1" in localhost_addresses():
            assert f'milvus_scaler_target_up{{target="http://[::1]:{exporter.port}/metrics"}} 0' in text
        log = scaler.service.log_path.read_text()
        assert "no-such-host.invalid" in log and "cannot resolve" in log
        assert scaler.service.alive()
    finally:
        scaler.stop()
        exporter.stop()

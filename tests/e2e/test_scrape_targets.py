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
        # The help text of the crates' metric_names.rs lists, registered at start-up.
        assert "# HELP milvus_scaler_target_up 1 when the last scrape of this target succeeded" in text
        assert "# HELP milvus_scaler_signal_known " in text and "# HELP milvus_scaler_round_duration_seconds " in text
        # Every address of the name is a target (::1 too where localhost has it; nothing listens there).
        if "::1" in localhost_addresses():
            assert f'milvus_scaler_target_up{{target="http://[::1]:{exporter.port}/metrics"}} 0' in text
        log = scaler.service.log_path.read_text()
        assert "no-such-host.invalid" in log and "cannot resolve" in log
        assert scaler.service.alive()
    finally:
        scaler.stop()
        exporter.stop()


def test_file_target_is_reread_each_round_and_demand_drain_is_honoured(tmp_path):
    """A `file:` target list is followed as it changes (emptied: every signal unknown; refilled: back),
    and `signals.demand_drain` reaches search_demand: nq in flight / drain on top of the nq rate."""
    body = fixture("milvus-2.3.5-metrics-under-load.prom")
    assert 'milvus_proxy_executing_total_nq{node_id="3"} 0' in body
    exporter = StaticExporter(body.replace('milvus_proxy_executing_total_nq{node_id="3"} 0',
                                           'milvus_proxy_executing_total_nq{node_id="3"} 30'))
    targets = tmp_path / "targets.txt"
    targets.write_text(f"# the one proxy\nhttp://127.0.0.1:{exporter.port}/metrics\n")
    scaler = Scaler({
        "milvus": [{"name": "demo", "scrape": {"interval": "1s", "targets": [f"file:{targets}"]}}],
        "signals": {"window": "10s", "stale_after": "5s", "demand_drain": "10s"},
    })
    try:
        # The received-nq counter stands still in the capture: demand is 30 nq in flight / 10 s.
        wait_until(lambda: scaler_signal(scaler, "demo", "search_demand") == 3.0, 30, "search_demand of 3.0")
        targets.write_text("")
        wait_until(lambda: scaler_signal(scaler, "demo", "loaded_entities") is None, 30,
                   "signals unknown once the list is empty")
        targets.write_text(f"http://127.0.0.1:{exporter.port}/metrics\n")
        wait_until(lambda: scaler_signal(scaler, "demo", "loaded_entities") == 250_000, 30,
                   "signals back once the target is listed again")
        assert scaler.service.alive()
    finally:
        scaler.stop()
        exporter.stop()

"""`make run`: a real Milvus 2.3.5 on loopback, `milvus-scaler serve` against it, and a live table of
every signal. Ctrl-C stops everything this started (Milvus included, by PID)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.services import Milvus, Scaler, cargo_bin  # noqa: E402


def main() -> int:
    print("starting Milvus 2.3.5 standalone (first start takes a few seconds)...", flush=True)
    milvus = Milvus()
    scaler = None
    try:
        config = {"milvus": [{"name": "demo", "namespace": "default",
                              "scrape": {"targets": [milvus.metrics_url], "interval": "1s"}}],
                  "signals": {"window": "30s", "stale_after": "10s"}}
        scaler = Scaler(config)
        print(f"""
Milvus gRPC:            {milvus.uri}
Milvus metrics:         {milvus.metrics_url}
milvus-scaler metrics:  {scaler.telemetry}/metrics   (health: /healthz, /readyz)
config:                 {scaler.config_path}
Drive a load with pymilvus against {milvus.uri} and watch the signals move. Ctrl-C to stop.
""", flush=True)
        subprocess.run([cargo_bin("milvus-scaler"), "signals", "--watch", "--config", str(scaler.config_path)])
    except KeyboardInterrupt:
        pass
    finally:
        print("stopping...", flush=True)
        if scaler:
            scaler.stop()
        milvus.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env bash
# Builds the Kafka-API broker the Milvus cluster tests use: tansu 0.6.0 (crates.io, Apache-2.0), with its
# `dynostore` feature (the default features have no storage engine; we run it with memory://).
# Idempotent: skipped when the binary exists. A cold build takes ~20-25 min on 2 cores.
#   binary: $CACHE/tansu-0.6.0/bin/tansu    CACHE=${MILVUS_SCALER_CACHE:-$HOME/.cache/milvus-scaler}
# A flock on $CACHE/tansu-0.6.0.lock makes concurrent callers wait for one build instead of racing.
set -euo pipefail
CACHE=${MILVUS_SCALER_CACHE:-$HOME/.cache/milvus-scaler}
ROOT="$CACHE/tansu-0.6.0"
BIN="$ROOT/bin/tansu"
export PATH="$HOME/.cargo/bin:$PATH"
mkdir -p "$CACHE"

exec 9>"$CACHE/tansu-0.6.0.lock"
if ! flock -n 9; then
  echo "broker: another tests/broker.sh is building tansu; waiting for it"
  flock 9
fi

if [ -x "$BIN" ]; then
  echo "broker: $BIN"
  exit 0
fi

echo "broker: building tansu 0.6.0 into $ROOT (log: $CACHE/tansu-build.log; ~20-25 min cold)"
if ! cargo install tansu@0.6.0 --features dynostore --locked --root "$ROOT" >"$CACHE/tansu-build.log" 2>&1; then
  tail -30 "$CACHE/tansu-build.log" >&2
  echo "broker: building tansu failed; full log: $CACHE/tansu-build.log" >&2
  exit 1
fi
echo "broker: $BIN"

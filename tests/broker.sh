#!/usr/bin/env bash
# Builds the Kafka-API broker the Milvus cluster tests use: tansu 0.6.0 (crates.io, Apache-2.0) with its
# `dynostore` feature (the default features have no storage engine; the tests run it on memory://),
# plus ONE small source patch, below. Idempotent: skipped when the binary exists. A flock makes
# concurrent callers wait for one build instead of racing. Cold build ~20-25 min on 2 cores.
#
#   binary:  $CACHE/tansu-0.6.0-milvus/bin/tansu      CACHE=${MILVUS_SCALER_CACHE:-$HOME/.cache/milvus-scaler}
#   sources: $CACHE/tansu-0.6.0-src/ (tansu + patched tansu-service, target dir kept for rebuilds)
#
# The patch, and why a setting cannot replace it:
#   Milvus 2.3.5 speaks Kafka through librdkafka 1.9.1, which sends ApiVersions v3 first. tansu 0.6.0
#   answers it with four optional KIP-584 tagged fields set (supported_features, finalized_features_epoch,
#   finalized_features, zk_migration_ready); librdkafka 1.9.1 fails to read that reply ("ApiVersionRequest
#   failed: Local: Read underflow: probably due to broker version < 0.10") and never gets further.
#   Tried first, and it does NOT help: `kafka.producer.*` / `kafka.consumer.*` in milvus.yaml do reach
#   librdkafka (Milvus logs them as extraProducerConfig/extraConsumerConfig), but with
#   `api.version.request: false` + `broker.version.fallback: 2.0.0` librdkafka still sends ApiVersions
#   (any fallback >= 0.10 re-enables it, as its CONFIGURATION.md says) and fails the same way; a fallback
#   below 0.10 would drop record headers and zstd, which Milvus's producer uses.
#   So tansu-service's ApiVersions reply leaves those four fields unset (None): tansu-service-0.6.0/src/api.rs.
#   It is applied with cargo's [patch.crates-io] to a copy of tansu-service; every other crate stays at
#   the version tansu 0.6.0's own Cargo.lock pins (cargo only re-points tansu-service at the copy).
set -euo pipefail
CACHE=${MILVUS_SCALER_CACHE:-$HOME/.cache/milvus-scaler}
ROOT="$CACHE/tansu-0.6.0-milvus"
BIN="$ROOT/bin/tansu"
SRC="$CACHE/tansu-0.6.0-src"
LOG="$CACHE/tansu-build.log"
export PATH="$HOME/.cargo/bin:$PATH"
CARGO_HOME=${CARGO_HOME:-$HOME/.cargo}
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

registry_src() { ls -d "$CARGO_HOME"/registry/src/*/"$1" 2>/dev/null | head -1; }

# 1. The published sources of tansu 0.6.0 and tansu-service 0.6.0 (cargo's own download).
if [ -z "$(registry_src tansu-0.6.0)" ] || [ -z "$(registry_src tansu-service-0.6.0)" ]; then
  echo "broker: fetching tansu 0.6.0 sources with cargo"
  mkdir -p "$SRC/fetch/src"
  touch "$SRC/fetch/src/lib.rs"
  cat >"$SRC/fetch/Cargo.toml" <<'EOF'
[package]
name = "tansu-fetch"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
tansu = { version = "=0.6.0", default-features = false }
tansu-service = "=0.6.0"

[workspace]
EOF
  cargo fetch --manifest-path "$SRC/fetch/Cargo.toml" >>"$LOG" 2>&1
fi
TANSU_SRC=$(registry_src tansu-0.6.0)
SERVICE_SRC=$(registry_src tansu-service-0.6.0)

# 2. A copy of each; the patch on tansu-service; tansu's manifest made a workspace root that patches it.
rm -rf "$SRC/tansu" "$SRC/tansu-service"
mkdir -p "$SRC"
cp -r "$TANSU_SRC" "$SRC/tansu"
cp -r "$SERVICE_SRC" "$SRC/tansu-service"
API="$SRC/tansu-service/src/api.rs"
before=$(wc -l <"$API")
sed -i \
  -e '/^ *\.finalized_features(Some(\[\]\.into()))$/d' \
  -e '/^ *\.finalized_features_epoch(Some(-1))$/d' \
  -e '/^ *\.supported_features(Some(\[\]\.into()))$/d' \
  -e '/^ *\.zk_migration_ready(Some(false))$/d' \
  "$API"
if [ $((before - $(wc -l <"$API"))) -ne 4 ]; then
  echo "broker: the ApiVersions patch did not apply to $API (expected to remove 4 lines)" >&2
  exit 1
fi
cat >>"$SRC/tansu/Cargo.toml" <<'EOF'

# Added by milvus-scaler tests/broker.sh: build this package alone, with the patched tansu-service.
[workspace]

[patch.crates-io]
tansu-service = { path = "../tansu-service" }
EOF

# 3. Build (release, dynostore) and install the binary.
echo "broker: building patched tansu 0.6.0 into $ROOT (log: $LOG; ~20-25 min cold)"
if ! (cd "$SRC/tansu" && CARGO_TARGET_DIR="$SRC/target" \
      cargo build --release --features dynostore --bin tansu) >>"$LOG" 2>&1; then
  tail -30 "$LOG" >&2
  echo "broker: building tansu failed; full log: $LOG" >&2
  exit 1
fi
install -D -m 0755 "$SRC/target/release/tansu" "$BIN"
echo "broker: $BIN"

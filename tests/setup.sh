#!/usr/bin/env bash
# Installs what the tests, the demo and the benchmarks need, idempotently, into ignored folders:
#   - Debian packages: prometheus (with promtool), wrk, rclone, etcd-server, shellcheck  (apt-get; root on these machines)
#   - .venv/: Milvus 2.3.5 standalone, pymilvus, moto server, aws CLI, pytest, grpc tools, ...
#   - the Kafka-API broker tansu 0.6.0 for the Milvus cluster tests (tests/broker.sh, cached)
#   - image and release tools: Debian's buildah, cargo-cyclonedx (SBOMs) in ~/.cargo/bin
# Re-running is cheap: each step is skipped when already done.
# `setup.sh --images` installs only the image and release tools (make image / make release);
# `setup.sh --fuzz` only cargo-fuzz (make fuzz).
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo "setup: installing Debian packages: ${missing[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# Images (images/build.sh): buildah builds FROM scratch without a daemon; readelf/ldd (binutils,
# libc-bin) list what the binaries load; ca-certificates is the bundle the images ship.
# Release (images/release.sh): cargo-cyclonedx writes the SBOMs, pinned; built once (~5 min).
CYCLONEDX_VERSION=0.5.9
image_tools() {
  export PATH="$HOME/.cargo/bin:$PATH"
  apt_install buildah binutils ca-certificates
  if [ "$(cargo-cyclonedx cyclonedx --version 2>/dev/null | awk '{print $2}')" != "$CYCLONEDX_VERSION" ]; then
    echo "setup: cargo install cargo-cyclonedx@$CYCLONEDX_VERSION (once)"
    CARGO_TARGET_DIR="${TMPDIR:-/tmp}/cargo-cyclonedx-build" \
      cargo install --locked --quiet "cargo-cyclonedx@$CYCLONEDX_VERSION"
  fi
}
if [ "${1:-}" = "--images" ]; then
  image_tools
  exit 0
fi

# Fuzzing (make fuzz, fuzz/run.sh): cargo-fuzz drives libFuzzer; pinned, built once (~3 min).
CARGO_FUZZ_VERSION=0.13.2
if [ "${1:-}" = "--fuzz" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
  if [ "$(cargo fuzz --version 2>/dev/null | awk '{print $2}')" != "$CARGO_FUZZ_VERSION" ]; then
    echo "setup: cargo install cargo-fuzz@$CARGO_FUZZ_VERSION (once)"
    CARGO_TARGET_DIR="${TMPDIR:-/tmp}/cargo-fuzz-build" \
      cargo install --locked --quiet "cargo-fuzz@$CARGO_FUZZ_VERSION"
  fi
  exit 0
fi

apt_install prometheus wrk rclone etcd-server shellcheck
image_tools
# Debian's package starts a system Prometheus on :9090; the tests run their own on free ports.
if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
  systemctl stop prometheus || true
fi

stamp=.venv/.requirements.sha256
want=$(sha256sum tests/requirements.txt | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: creating .venv from tests/requirements.txt"
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r tests/requirements.txt
  echo "$want" > "$stamp"
fi

# checkov in its own virtualenv (it pins boto3 exactly; see tests/requirements-checkov.txt).
stamp=.venv-checkov/.requirements.sha256
want=$(sha256sum tests/requirements-checkov.txt | cut -d' ' -f1)
if [ ! -x .venv-checkov/bin/checkov ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: creating .venv-checkov from tests/requirements-checkov.txt"
  python3 -m venv .venv-checkov
  .venv-checkov/bin/pip install -q --upgrade pip
  .venv-checkov/bin/pip install -q -r tests/requirements-checkov.txt
  echo "$want" > "$stamp"
fi
# Debian's etcd package may start a system etcd on :2379; the cluster tests run their own on free ports.
if command -v systemctl >/dev/null && systemctl is-active --quiet etcd 2>/dev/null; then
  systemctl stop etcd || true
fi

bash tests/broker.sh
echo "setup: ok"

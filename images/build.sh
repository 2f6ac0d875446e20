#!/usr/bin/env bash
# Builds the two images (milvus-scaler, segment-cache) with Debian's buildah, daemonless:
# vfs storage, chroot isolation (no image is pulled: both are FROM scratch, see *.Containerfile).
#   PROFILE   cargo profile whose binaries go in: release (default) or debug; they must be built
#   VERSION   image tag and org.opencontainers.image.version (default: the workspace's Cargo version)
#   REGISTRY  image name prefix (default ghcr.io/milvus-scaler)
# Prints one line per image: NAME IMAGE-ID. The image timestamp is the HEAD commit's, so the same
# binaries and revision give the same image.
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${PROFILE:-release}
REGISTRY=${REGISTRY:-ghcr.io/milvus-scaler}
cargo_version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
VERSION=${VERSION:-$cargo_version}
source_url=$(sed -n 's/^repository = "\(.*\)"/\1/p' Cargo.toml | head -1)
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
epoch=$(git log -1 --format=%ct 2>/dev/null || echo 0)
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
target=${CARGO_TARGET_DIR:-target}
command -v buildah >/dev/null || { echo "build.sh: buildah not found: run make setup" >&2; exit 1; }
BUILDAH=(buildah --storage-driver vfs)

for name in milvus-scaler segment-cache; do
  ctx=$target/images/$name
  images/rootfs.sh "$target/$PROFILE/$name" "$ctx"
  "${BUILDAH[@]}" bud --isolation chroot --quiet --timestamp "$epoch" --layers=false \
    -f "images/$name.Containerfile" \
    --build-arg VERSION="$VERSION" --build-arg REVISION="$revision" \
    --build-arg SOURCE="$source_url" --build-arg CREATED="$created" \
    -t "$REGISTRY/$name:$VERSION" "$ctx" >/dev/null
  echo "$name $("${BUILDAH[@]}" images --noheading --no-trunc --format '{{.ID}}' "$REGISTRY/$name:$VERSION")"
done

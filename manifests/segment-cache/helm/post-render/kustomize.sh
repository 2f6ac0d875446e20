#!/usr/bin/env bash
# Helm post-renderer: reads the rendered chart on stdin, adds segment-cache to the query-node pods.
set -euo pipefail
dir="$(cd "$(dirname "$0")" && pwd)"
cat > "$dir/all.yaml"
trap 'rm -f "$dir/all.yaml"' EXIT
kubectl kustomize "$dir"

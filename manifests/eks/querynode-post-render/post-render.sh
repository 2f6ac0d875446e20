#!/usr/bin/env bash
# Helm post-renderer: reads Helm's rendered manifests on stdin, applies this directory's kustomization
# (segment-cache sidecar + warm init container on the query nodes, see kustomization.yaml) and writes the
# result to stdout. Usage: helm upgrade --install ... --post-renderer manifests/eks/querynode-post-render/post-render.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$here/kustomization.yaml" "$here/querynode-segment-cache.yaml" "$work/"
cat > "$work/helm-output.yaml"
if command -v kustomize >/dev/null 2>&1; then
  kustomize build "$work"
else
  kubectl kustomize "$work"
fi

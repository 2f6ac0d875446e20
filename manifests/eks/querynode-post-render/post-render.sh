#!/usr/bin/env bash
# Helm post-renderer: reads Helm's rendered manifests on stdin, applies this directory's kustomization
# (the segment-cache sidecar on the query nodes, see kustomization.yaml) and writes the
# result to stdout. Usage: helm upgrade --install ... --post-renderer manifests/eks/querynode-post-render/post-render.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$here/kustomization.yaml" "$here/querynode-segment-cache.yaml" "$work/"
cat > "$work/helm-output.yaml"
if command -v kustomize >/dev/null 2>&1; then
  kustomize build "$work" > "$work/out.yaml"
else
  kubectl kustomize "$work" > "$work/out.yaml"
fi
# The patch selects Deployment `milvus-querynode` (release `milvus`). A target that matches nothing is not an
# error for kustomize, so check the sidecar really landed: otherwise Milvus would be installed pointing at
# 127.0.0.1:9000 with nothing listening.
image="$(sed -n 's/^[[:space:]]*image:[[:space:]]*//p' "$here/querynode-segment-cache.yaml" | head -n 1)"
if [ -z "$image" ] || ! grep -qF "image: $image" "$work/out.yaml"; then
  echo "post-render.sh: no Deployment milvus-querynode in Helm's output (release not named 'milvus'?);" \
    "the segment-cache sidecar was not added" >&2
  exit 1
fi
cat "$work/out.yaml"

#!/usr/bin/env bash
# The release bundle, in dist/ (emptied first):
#   milvus-scaler-MODE.yaml        one install file per mode (external-metrics, keda): the kustomize
#                                  overlay rendered, its image pinned by digest (image: ...@sha256:...)
#   NAME-VERSION.oci.tar           both images as OCI archives (skopeo/crane/ctr can load them)
#   NAME-VERSION.cdx.json          an SBOM per image (CycloneDX JSON of the binary's crate, cargo-cyclonedx)
#   images.txt                     NAME@DIGEST of both images (segment-cache is wired by the Helm post-renderer)
#   RELEASE-NOTES.md               version, revision, digests, install steps, commits since the last tag
#   SHA256SUMS                     of every file above (sha256sum -c SHA256SUMS)
# Env as images/build.sh (VERSION required, PROFILE, REGISTRY); MODES overrides the overlay list.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${VERSION:?VERSION=x.y.z is required}"
export VERSION PROFILE=${PROFILE:-release} REGISTRY=${REGISTRY:-ghcr.io/milvus-scaler}
MODES=${MODES:-external-metrics keda}
target=${CARGO_TARGET_DIR:-target}
dist=${DIST:-dist}
BUILDAH=(buildah --storage-driver vfs)
command -v kubectl >/dev/null || { echo "release.sh: kubectl not found (it renders the overlays)" >&2; exit 1; }
command -v cargo-cyclonedx >/dev/null || { echo "release.sh: cargo-cyclonedx not found: run make setup" >&2; exit 1; }

images/build.sh
rm -rf "$dist"
mkdir -p "$dist"

declare -A digest
for name in milvus-scaler segment-cache; do
  ref=$REGISTRY/$name:$VERSION
  "${BUILDAH[@]}" push --quiet --digestfile "$target/images/$name.digest" "$ref" \
    "oci-archive:$dist/$name-$VERSION.oci.tar:$ref"
  digest[$name]=$(cat "$target/images/$name.digest")
  echo "$REGISTRY/$name@${digest[$name]}" >> "$dist/images.txt"
done

# Install files: each overlay through a kustomization (a temporary one under target/: kustomize
# takes relative resource paths only) that pins the image by digest; manifests/ is not touched.
for mode in $MODES; do
  k=$target/release-kustomize/$mode
  rm -rf "$k"; mkdir -p "$k"
  cat > "$k/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $(realpath --relative-to="$k" "manifests/overlays/$mode")
images:
  - name: ghcr.io/milvus-scaler/milvus-scaler
    newName: $REGISTRY/milvus-scaler
    digest: ${digest[milvus-scaler]}
YAML
  {
    echo "# milvus-scaler $VERSION, $mode mode: kubectl apply -f milvus-scaler-$mode.yaml"
    echo "# Rendered from manifests/overlays/$mode at $(git rev-parse HEAD 2>/dev/null || echo unknown)."
    kubectl kustomize "$k"
  } > "$dist/milvus-scaler-$mode.yaml"
done

# SBOMs: the crate graph each binary is built from (normal dependencies, this Cargo.lock).
# cargo-cyclonedx writes one file into every workspace member's folder (it has no package
# selection): a name unique to this run, the two we ship moved out, every other one deleted.
sbom=.release-sbom-$$
trap 'find crates -name "$sbom.cdx.json" -delete' EXIT
cargo-cyclonedx cyclonedx --manifest-path Cargo.toml --format json --spec-version 1.5 \
  --override-filename "$sbom.cdx" >/dev/null
for name in milvus-scaler segment-cache; do
  mv "crates/$name/$sbom.cdx.json" "$dist/$name-$VERSION.cdx.json"
done
find crates -name "$sbom.cdx.json" -delete

last_tag=$(git describe --tags --abbrev=0 2>/dev/null || true)
{
  echo "# milvus-scaler $VERSION"
  echo
  echo "Revision: $(git rev-parse HEAD 2>/dev/null || echo unknown)${last_tag:+ (changes since $last_tag)}"
  echo
  echo "## Images"
  echo
  for name in milvus-scaler segment-cache; do
    echo "- \`$REGISTRY/$name:$VERSION\` = \`$REGISTRY/$name@${digest[$name]}\` ($name-$VERSION.oci.tar)"
  done
  echo
  echo "## Install"
  echo
  echo "Load the archives into your registry keeping their digests, e.g."
  echo "\`skopeo copy --preserve-digests oci-archive:milvus-scaler-$VERSION.oci.tar docker://$REGISTRY/milvus-scaler:$VERSION\`,"
  echo "then \`kubectl apply -f milvus-scaler-external-metrics.yaml\` (or \`-keda.yaml\`). See the README's Deploy section."
  echo
  echo "## Changes"
  echo
  git log --no-merges --format='- %h %s' ${last_tag:+"$last_tag"..HEAD} 2>/dev/null | head -500
} > "$dist/RELEASE-NOTES.md"

(cd "$dist" && sha256sum -- * > SHA256SUMS)
echo "release.sh: $dist/"; ls -l "$dist"

"""Image sizes: both images built from the release binaries (images/build.sh, PROFILE=release) and
pushed to OCI archives; reports each image's uncompressed root filesystem and its compressed layer
(what a node pulls), with what the image holds besides the binary.

Baselines. KEDA's published image sizes: no citable figure was found (searched KEDA's docs, blog and
issues with the search tool: none states the size of ghcr.io/kedacore/keda or
keda-metrics-apiserver), so that row has no number rather than an invented one. What is citable is
the size of the distroless bases such Go operators ship on: keptn/lifecycle-toolkit issue #1087
(https://github.com/keptn/lifecycle-toolkit/issues/1087) lists gcr.io/distroless/base-debian11:nonroot
at 20.4 MB and gcr.io/distroless/static:nonroot at 2.43 MB; our non-binary part (glibc loader and
libraries, CA bundle, passwd/group) is compared with the glibc one (base-debian11)."""
from __future__ import annotations

import json
import os
import subprocess
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REGISTRY = "localhost/milvus-scaler-bench"
VERSION = "bench"
BUILDAH = ["buildah", "--storage-driver", "vfs"]
DISTROLESS_BASE_MB = 20.4  # keptn/lifecycle-toolkit#1087
MB = 1_000_000


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def layer_bytes(archive: Path) -> int:
    """Sum of the compressed layer blobs of the one image in an OCI archive."""
    with tarfile.open(archive) as t:
        index = json.load(t.extractfile("index.json"))
        digest = index["manifests"][0]["digest"].split(":", 1)[1]
        manifest = json.load(t.extractfile(f"blobs/sha256/{digest}"))
    return sum(layer["size"] for layer in manifest["layers"])


def main() -> None:
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    profile = os.environ.get("BENCH_IMAGE_PROFILE", "release")  # debug: a quick check of this script
    env = {**os.environ, "PROFILE": profile, "VERSION": VERSION, "REGISTRY": REGISTRY}
    subprocess.run(["bash", str(REPO / "images" / "build.sh")], cwd=REPO, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    rows, notes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("milvus-scaler", "segment-cache"):
            ref = f"{REGISTRY}/{name}:{VERSION}"
            archive = Path(tmp) / f"{name}.oci.tar"
            subprocess.run(BUILDAH + ["push", "--quiet", ref, f"oci-archive:{archive}:{ref}"], check=True,
                           stdout=subprocess.DEVNULL)
            rootfs = target / "images" / name / "rootfs"
            total = tree_bytes(rootfs)
            binary = (rootfs / "usr" / "local" / "bin" / name).stat().st_size
            rest = total - binary
            compressed = layer_bytes(archive)
            rows += [
                {"metric": f"{name} image, compressed layer (pulled)", "ours": round(compressed / MB, 2),
                 "baseline": None, "baseline_name": "KEDA image: no citable published size found", "unit": "MB",
                 "ratio": None, "better": "lower"},
                {"metric": f"{name} image, uncompressed", "ours": round(total / MB, 2), "baseline": None,
                 "baseline_name": "KEDA image: no citable published size found", "unit": "MB", "ratio": None,
                 "better": "lower"},
                {"metric": f"{name} image without the binary (libc, loader, CA bundle, passwd)",
                 "ours": round(rest / MB, 2), "baseline": DISTROLESS_BASE_MB,
                 "baseline_name": "gcr.io/distroless/base-debian11:nonroot (keptn/lifecycle-toolkit#1087)",
                 "unit": "MB", "ratio": round(rest / MB / DISTROLESS_BASE_MB, 3), "better": "lower"},
            ]
            subprocess.run(BUILDAH + ["rmi", ref], capture_output=True)
    notes.append(f"{profile} profile binaries, glibc-dynamic, FROM scratch (images/rootfs.sh); one layer per image.")
    notes.append("KEDA: no published image size could be cited (see bench/bench_images.py); distroless "
                 "figures from https://github.com/keptn/lifecycle-toolkit/issues/1087.")
    print(json.dumps({"name": "images", "rows": rows, "notes": notes}))


if __name__ == "__main__":
    main()

"""The container images and the release bundle, built for real with buildah (vfs storage, chroot
isolation: no daemon, nothing pulled) from the debug binaries `make build` made.

One `make release VERSION=0.0.0-test PROFILE=debug` per session (it builds both images through
`images/build.sh`, then the bundle); the image tests run the images it built, inside them, as
UID/GID 65532, on the host's loopback network (`buildah run --network host`): `--version`,
`check-config` on the shipped configurations, `serve` answering /healthz and resolving a
`dns+http://` name from the container's /etc/hosts (glibc's resolver works in the image), and
segment-cache serving a GET through moto. The release tests check the bundle: files, checksums,
install YAMLs pinned to the digests of the archives, strict validation."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import urllib.request
from pathlib import Path

import pytest
import yaml

from harness.exporter import StaticExporter, fixture
from harness.procs import REPO, Service, free_port, http_ok, wait_until
from harness.segment_cache import ACCESS_KEY, SECRET_KEY, cache_config, s3_client
from harness.services import Moto, run_dir, tool

VERSION = "0.0.0-test"
REGISTRY = "localhost/milvus-scaler-e2e"
NAMES = ("milvus-scaler", "segment-cache")
BUILDAH = ["buildah", "--storage-driver", "vfs"]
K8S_VERSION = "1.33.0"
CERT_MANAGER = "cert-manager.io/v1"
HOSTS_NAME = "milvus-querynode.e2e.test"  # only in the container's /etc/hosts


def _run(cmd: list[str], timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    assert out.returncode == 0, f"{cmd} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def _untracked() -> set[str]:
    """Files git sees as untracked or changed in the source tree (ignored ones aside)."""
    out = _run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO).stdout
    return {line[3:] for line in out.splitlines()}


@pytest.fixture(scope="session")
def release():
    """dist/ of `make release VERSION=0.0.0-test PROFILE=debug` (into a run dir, not the repo's dist/)."""
    if not shutil.which("buildah"):
        pytest.fail("buildah not found: run `make setup`")
    dist = run_dir("release") / "dist"
    env = {**os.environ, "DIST": str(dist)}
    before = _untracked()
    try:
        _run(["make", "-s", "release", f"VERSION={VERSION}", "PROFILE=debug", f"REGISTRY={REGISTRY}"], cwd=REPO,
             env=env, timeout=1200)
        # Nothing left in the source tree (cargo-cyclonedx writes into every crate's folder).
        assert _untracked() == before, sorted(_untracked() - before)
        yield dist
    finally:
        # vfs keeps a full copy per image: drop this session's (the bundle has them as archives).
        for name in NAMES:
            subprocess.run(BUILDAH + ["rmi", f"{REGISTRY}/{name}:{VERSION}"], capture_output=True)


@pytest.fixture(scope="session")
def containers(release):
    """One working container per image (`buildah from`), with HOSTS_NAME in its /etc/hosts."""
    made = {}
    try:
        for name in NAMES:
            made[name] = _run(BUILDAH + ["from", "--pull-never", "--add-host", f"{HOSTS_NAME}:127.0.0.1",
                                         f"{REGISTRY}/{name}:{VERSION}"]).stdout.strip()
        yield made
    finally:
        for c in made.values():
            subprocess.run(BUILDAH + ["rm", c], capture_output=True)


def in_image(container: str, args: list[str], volumes: list[str] = (), env: dict | None = None,
             user: str | None = "65532:65532") -> list[str]:
    """The command line running `args` (after the image's entrypoint binary) inside `container`."""
    cmd = BUILDAH + ["run", "--isolation", "chroot", "--network", "host"]
    if user:
        cmd += ["--user", user]
    for v in volumes:
        cmd += ["-v", v]
    for k, v in (env or {}).items():
        cmd += ["-e", f"{k}={v}"]
    name = "milvus-scaler" if container.startswith("milvus-scaler") else "segment-cache"
    return cmd + [container, "--", f"/usr/local/bin/{name}"] + list(args)


def process_uids(marker: str) -> set[tuple[str, str]]:
    """(real uid, real gid) of every process whose command line contains `marker`, buildah's own excluded."""
    found = set()
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmdline = (p / "cmdline").read_bytes().split(b"\0")
            status = (p / "status").read_text()
        except OSError:
            continue
        if cmdline and cmdline[0].endswith(b"buildah") or marker.encode() not in b" ".join(cmdline):
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        found.add((fields["Uid"].split()[0], fields["Gid"].split()[0]))
    return found


def docs_of(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def config_maps(docs: list[dict]) -> list[str]:
    return [d["data"]["config.yaml"] for d in docs if d["kind"] == "ConfigMap" and "config.yaml" in d.get("data", {})]


# --- images ------------------------------------------------------------------------------------

def test_images_are_non_root_scratch_with_oci_labels(release):
    revision = _run(["git", "rev-parse", "HEAD"], cwd=REPO).stdout.strip()
    for name in NAMES:
        info = json.loads(_run(BUILDAH + ["inspect", "--type", "image", f"{REGISTRY}/{name}:{VERSION}"]).stdout)
        config = info["OCIv1"]["config"]
        assert config["User"] == "65532:65532"
        assert config["Entrypoint"] == [f"/usr/local/bin/{name}"]
        labels = config["Labels"]
        assert labels["org.opencontainers.image.version"] == VERSION
        assert labels["org.opencontainers.image.revision"] == revision
        assert labels["org.opencontainers.image.source"].startswith("https://")
        assert len(info["OCIv1"]["rootfs"]["diff_ids"]) == 1, "FROM scratch plus one COPY: one layer"


def test_version_as_nonroot(containers):
    cargo_version = next(line.split('"')[1] for line in (REPO / "Cargo.toml").read_text().splitlines()
                         if line.startswith("version = "))
    for name, c in containers.items():
        out = _run(in_image(c, ["--version"]), timeout=60).stdout
        assert out.startswith(f"{name} {cargo_version}"), out


def test_check_config_on_shipped_configs(release, containers):
    """Each install YAML's milvus-scaler config and segment-cache's shipped config pass check-config
    inside the image; a broken one exits 2 there too (the check really runs)."""
    d = run_dir("image-configs")
    os.chmod(d, 0o755)
    configs = {}
    for mode in ("external-metrics", "keda"):
        [text] = config_maps(docs_of(release / f"milvus-scaler-{mode}.yaml"))
        configs[f"milvus-scaler-{mode}"] = ("milvus-scaler", text)
    # segment-cache's one install path: the EKS sidecar's config (docs/eks.md step 5).
    configs["segment-cache"] = ("segment-cache", (REPO / "manifests" / "eks" / "segment-cache-config.yaml").read_text())
    configs["broken"] = ("milvus-scaler", "milvus: []\nno_such_key: 1\n")
    for key, (name, text) in configs.items():
        (d / f"{key}.yaml").write_text(text)
        os.chmod(d / f"{key}.yaml", 0o644)
        r = subprocess.run(in_image(containers[name], ["check-config", "--config", f"/configs/{key}.yaml"],
                                    volumes=[f"{d}:/configs:ro"], env={"SEGMENT_CACHE_SECRET_KEY": "x" * 24}),
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == (2 if key == "broken" else 0), (key, r.stdout, r.stderr)


def test_serve_healthz_and_dns_target_as_nonroot(containers):
    """serve answers /healthz on loopback; a dns+http:// name found only in the container's /etc/hosts
    is resolved and scraped; the process runs as 65532:65532."""
    exporter = StaticExporter(fixture("milvus-2.3.5-metrics-under-load.prom"))
    d = run_dir("image-serve")
    os.chmod(d, 0o755)
    port = free_port()
    cfg = {"milvus": [{"name": "demo", "scrape": {"interval": "1s", "targets": [
        f"dns+http://{HOSTS_NAME}:{exporter.port}/metrics"]}}],
        "telemetry": {"listen": f"127.0.0.1:{port}"}}
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    os.chmod(d / "config.yaml", 0o644)
    marker = f"/cfg-{port}/config.yaml"
    svc = Service("milvus-scaler-image", in_image(containers["milvus-scaler"], ["serve", "--config", marker],
                                                  volumes=[f"{d}:/cfg-{port}:ro"], env={"RUST_LOG": "info"}),
                  d / "serve.log")
    try:
        wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), 60, "/healthz of serve in the image", proc=svc)
        target = f'milvus_scaler_target_up{{target="http://127.0.0.1:{exporter.port}/metrics"}} 1'

        def scraped():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                return target in r.read().decode()
        wait_until(scraped, 30, f"{HOSTS_NAME} resolved and scraped", proc=svc)
        assert exporter.requests > 0
        assert process_uids(marker) == {("65532", "65532")}
    finally:
        svc.stop()
        exporter.stop()
    assert not process_uids(marker), "serve outlived its buildah run"


def test_serve_on_a_read_only_root_resolves_hosts_names(containers):
    """The image's own root filesystem, mounted read-only (`buildah mount`, a private mount namespace,
    chroot as 65532:65532: what `readOnlyRootFilesystem: true` gives a pod): serve starts, answers
    /healthz, and resolves a name that only the bind-mounted /etc/hosts knows. (Here DNS is
    unreachable, so glibc falls back to files even without the image's nsswitch.conf; that file
    matters where DNS answers: files first, as in a pod.) `buildah run` has no read-only switch,
    hence the hand-made mount."""
    c = containers["milvus-scaler"]
    root = _run(BUILDAH + ["mount", c]).stdout.strip()
    exporter = StaticExporter(fixture("milvus-2.3.5-metrics-under-load.prom"))
    d = run_dir("image-ro")
    os.chmod(d, 0o755)
    port = free_port()
    (d / "hosts").write_text(f"127.0.0.1 {HOSTS_NAME}\n")
    cfg = {"milvus": [{"name": "demo", "scrape": {"interval": "1s", "targets": [
        f"dns+http://{HOSTS_NAME}:{exporter.port}/metrics"]}}], "telemetry": {"listen": f"127.0.0.1:{port}"}}
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    for f in ("hosts", "config.yaml"):
        os.chmod(d / f, 0o644)
    script = (f"mount --bind {root} {root} && mount --bind {d / 'hosts'} {root}/etc/hosts && "
              f"mount --bind {d} {root}/home/nonroot && mount -o remount,bind,ro {root} && "
              f"exec chroot --userspec=65532:65532 {root} /usr/local/bin/milvus-scaler serve "
              f"--config /home/nonroot/config.yaml")
    svc = Service("milvus-scaler-ro", ["unshare", "-m", "sh", "-c", script], d / "serve.log")
    try:
        wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), 60, "/healthz on a read-only root", proc=svc)
        target = f'milvus_scaler_target_up{{target="http://127.0.0.1:{exporter.port}/metrics"}} 1'

        def scraped():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                return target in r.read().decode()
        wait_until(scraped, 30, f"{HOSTS_NAME} resolved on a read-only root", proc=svc)
        assert process_uids("/home/nonroot/config.yaml") == {("65532", "65532")}
    finally:
        svc.stop()
        exporter.stop()
        subprocess.run(BUILDAH + ["umount", c], capture_output=True)
    assert "Read-only" not in svc.tail(200)


def test_segment_cache_serves_get_through_moto(containers):
    moto = Moto()
    d = run_dir("image-segment-cache")
    cache = d / "cache"
    cache.mkdir()
    os.chown(cache, 65532, 65532)
    os.chmod(d, 0o755)
    port, telemetry = free_port(), free_port()
    try:
        up = moto.client("s3")
        up.create_bucket(Bucket="milvus-bucket")
        body = os.urandom(300_000)
        up.put_object(Bucket="milvus-bucket", Key="files/insert_log/1/2/3/4/5", Body=body)
        cfg = cache_config(moto.url, "milvus-bucket", "64MiB", Path("/cache"), port, telemetry)
        (d / "config.yaml").write_text(yaml.safe_dump(cfg))
        os.chmod(d / "config.yaml", 0o644)
        svc = Service("segment-cache-image", in_image(containers["segment-cache"], ["serve", "--config", "/etc/sc/config.yaml"],
                                                      volumes=[f"{d / 'config.yaml'}:/etc/sc/config.yaml:ro", f"{cache}:/cache"]),
                      d / "serve.log")
        try:
            wait_until(lambda: http_ok(f"http://127.0.0.1:{telemetry}/healthz"), 60, "segment-cache /healthz", proc=svc)
            client = s3_client(f"http://127.0.0.1:{port}", ACCESS_KEY, SECRET_KEY)
            for _ in range(2):  # a miss (from moto), then a hit (from the cache dir, written as 65532)
                got = client.get_object(Bucket="milvus-bucket", Key="files/insert_log/1/2/3/4/5")["Body"].read()
                assert hashlib.sha256(got).digest() == hashlib.sha256(body).digest()
            owners = {(p.stat().st_uid, p.stat().st_gid) for p in cache.rglob("*")}
            assert owners == {(65532, 65532)}, owners
        finally:
            svc.stop()
    finally:
        moto.stop()


# --- release bundle ----------------------------------------------------------------------------

def test_release_bundle_files_and_checksums(release):
    files = sorted(p.name for p in release.iterdir())
    want = {"SHA256SUMS", "RELEASE-NOTES.md", "images.txt", "milvus-scaler-external-metrics.yaml",
            "milvus-scaler-keda.yaml"} | {f"{n}-{VERSION}{ext}" for n in NAMES for ext in (".oci.tar", ".cdx.json")}
    assert set(files) == want, files
    _run(["sha256sum", "--check", "--strict", "SHA256SUMS"], cwd=release)
    listed = {line.split()[1] for line in (release / "SHA256SUMS").read_text().splitlines()}
    assert listed == want - {"SHA256SUMS"}
    for n in NAMES:
        bom = json.loads((release / f"{n}-{VERSION}.cdx.json").read_text())
        assert bom["bomFormat"] == "CycloneDX"
        assert bom["metadata"]["component"]["name"] == n
        assert len(bom["components"]) > 20, "the crate graph, not an empty SBOM"
    notes = (release / "RELEASE-NOTES.md").read_text()
    assert f"# milvus-scaler {VERSION}" in notes


def archive_digest(path: Path) -> str:
    with tarfile.open(path) as t:
        index = json.load(t.extractfile("index.json"))
    [m] = index["manifests"]
    return m["digest"]


def test_install_yamls_pin_the_archived_images_and_validate(release):
    digests = {n: archive_digest(release / f"{n}-{VERSION}.oci.tar") for n in NAMES}
    assert (release / "images.txt").read_text().split() == [f"{REGISTRY}/{n}@{digests[n]}" for n in NAMES]
    for mode in ("external-metrics", "keda"):
        docs = docs_of(release / f"milvus-scaler-{mode}.yaml")
        images = [c["image"] for d in docs if d["kind"] == "Deployment"
                  for c in d["spec"]["template"]["spec"]["containers"]]
        assert images == [f"{REGISTRY}/milvus-scaler@{digests['milvus-scaler']}"], images
        builtin = [d for d in docs if d["apiVersion"] != CERT_MANAGER]
        path = run_dir("release-validate") / f"{mode}.yaml"
        path.write_text(yaml.safe_dump_all(builtin))
        out = subprocess.run([tool("kubernetes-validate"), "--strict", "-k", K8S_VERSION, str(path)],
                             capture_output=True, text=True, timeout=120)
        text = out.stdout + out.stderr
        assert out.returncode == 0, text
        assert "Couldn't find schema" not in text, text
        assert text.count("passed for resource") == len(builtin), text

"""Faults between segment-cache and its upstream (moto behind a fault-injecting TCP proxy: these
machines have no netem), kill -9 during a warm, a full disk, and a capacity smaller than the data.
Every byte served is checked by hash; the cache never goes over capacity; errors are S3 errors."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from botocore.exceptions import ClientError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.procs import Service, free_port, wait_until  # noqa: E402
from harness.segment_cache import FaultProxy, SegmentCache, cache_config, s3_client  # noqa: E402
from harness.services import Moto, cargo_bin, run_dir  # noqa: E402

pytestmark = pytest.mark.timeout(600)
BUCKET = "milvus-bucket"


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.fixture
def upstream():
    moto = Moto()
    moto.client("s3").create_bucket(Bucket=BUCKET)
    proxy = FaultProxy(moto.port)
    yield moto, proxy
    proxy.stop()
    moto.stop()


def put_objects(moto, n: int, size: int, prefix: str = "files/insert_log/1/") -> dict[str, str]:
    s3 = moto.client("s3")
    out = {}
    for i in range(n):
        body = os.urandom(size)
        key = f"{prefix}{i:04d}"
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
        out[key] = sha(body)
    return out


def data_bytes(cache_dir: Path) -> int:
    return sum(p.stat().st_size for p in (cache_dir / "objects").rglob("*") if p.is_file() and not p.name.endswith(".meta"))


def test_upstream_down_slow_and_cut_mid_body(upstream):
    moto, proxy = upstream
    objs = put_objects(moto, 3, 3_000_000)
    keys = sorted(objs)
    cache = SegmentCache(proxy.url, BUCKET, upstream_extra={"timeout": "2s", "max_attempts": 3})
    try:
        c = s3_client(cache.url)
        assert sha(c.get_object(Bucket=BUCKET, Key=keys[0])["Body"].read()) == objs[keys[0]]

        proxy.mode = "down"
        # Cached: still served, from the cache.
        assert sha(c.get_object(Bucket=BUCKET, Key=keys[0])["Body"].read()) == objs[keys[0]]
        # Not cached: a clear S3 error, not a hang or a made-up body.
        with pytest.raises(ClientError) as e:
            c.get_object(Bucket=BUCKET, Key=keys[1])
        assert e.value.response["Error"]["Code"] == "ServiceUnavailable", e.value.response
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503

        proxy.mode, proxy.delay = "slow", 0.02
        assert sha(c.get_object(Bucket=BUCKET, Key=keys[1])["Body"].read()) == objs[keys[1]]

        proxy.mode, proxy.cut_after = "cut", 1_000_000
        cuts_before = proxy.cuts
        try:
            body = c.get_object(Bucket=BUCKET, Key=keys[2])["Body"].read()
            assert sha(body) == objs[keys[2]], "a cut upstream body was served as if whole"
        except ClientError as err:
            assert err.response["Error"]["Code"] == "ServiceUnavailable", err.response
        assert proxy.cuts > cuts_before
        assert not list((cache.dir / "tmp").iterdir()), "a cut download left a temp file"
        assert cache.metric("segment_cache_objects") == 2

        proxy.mode = "pass"
        assert sha(c.get_object(Bucket=BUCKET, Key=keys[2])["Body"].read()) == objs[keys[2]]
        assert cache.metric("segment_cache_upstream_requests_total", outcome="error") > 0
    finally:
        cache.stop()


def test_corrupted_bytes_are_refused_never_cached_or_served(upstream):
    """A bit flipped on the wire (a bad NIC or middlebox: TCP's checksum does not always catch it)
    fails verification against upstream's full-object CRC, on the one-GET path of a read and on
    the parallel-range path of a warm: retried, then a clear error; nothing cached."""
    moto, proxy = upstream
    small = put_objects(moto, 1, 3_000_000)
    big = put_objects(moto, 1, 20_000_000, prefix="files/index_files/9/1/2/3/")
    # boto3 stores a CRC32 with each object; this is the check the cache relies on here.
    head = moto.client("s3").head_object(Bucket=BUCKET, Key=next(iter(small)), ChecksumMode="ENABLED")
    assert head.get("ChecksumCRC32"), f"moto kept no CRC: {head}"

    cache = SegmentCache(proxy.url, BUCKET, upstream_extra={"timeout": "5s", "max_attempts": 3})
    try:
        c = s3_client(cache.url)
        proxy.mode = "flip"  # a bit every 1 MB: inside the body of every answer of an object
        key = next(iter(small))
        with pytest.raises(ClientError) as e:
            c.get_object(Bucket=BUCKET, Key=key)
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503, e.value.response
        assert "does not match" in e.value.response["Error"]["Message"], e.value.response
        assert proxy.flips >= 3, "each of the 3 attempts saw a corrupted body"
        assert cache.metric("segment_cache_objects") == 0
        assert not list((cache.dir / "tmp").iterdir()), "a refused download left a temp file"

        proxy.mode = "pass"
        assert sha(c.get_object(Bucket=BUCKET, Key=key)["Body"].read()) == small[key]
        assert cache.metric("segment_cache_verified_objects_total", by="crc32") == 1
    finally:
        cache.stop()

    run = run_dir("sc-flip-warm")
    cfg = cache_config(proxy.url, BUCKET, "1GiB", run / "cache", free_port(), free_port(),
                       warm={"prefixes": ["files/index_files/"], "concurrency": 4, "part_size": "4MiB",
                             "in_serve": False})
    cfg["upstream"].update({"max_attempts": 3})
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    warm = [cargo_bin("segment-cache"), "warm", "--config", str(run / "config.yaml")]
    proxy.mode = "flip"
    r = subprocess.run(warm, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "1 failed" in r.stdout + r.stderr, (r.stdout, r.stderr[-2000:])
    assert data_bytes(run / "cache") == 0 and not list((run / "cache" / "tmp").iterdir())
    proxy.mode = "pass"
    r = subprocess.run(warm, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert data_bytes(run / "cache") == 20_000_000
    meta = next((run / "cache" / "objects").rglob("*.meta")).read_text()
    assert '"verified_by":"crc32"' in meta.replace(" ", ""), meta
    path = next(p for p in (run / "cache" / "objects").rglob("*") if p.is_file() and not p.name.endswith(".meta"))
    assert sha(path.read_bytes()) == next(iter(big.values()))


def test_capacity_smaller_than_data(upstream):
    moto, proxy = upstream
    objs = put_objects(moto, 10, 3_000_000)
    cache = SegmentCache(moto.url, BUCKET, capacity="12MB")
    try:
        c = s3_client(cache.url)
        for _ in range(2):
            for k, h in objs.items():
                assert sha(c.get_object(Bucket=BUCKET, Key=k)["Body"].read()) == h
                assert data_bytes(cache.dir) <= 12_000_000
        assert cache.metric("segment_cache_used_bytes") <= 12_000_000
        assert cache.metric("segment_cache_capacity_bytes") == 12_000_000
        assert cache.metric("segment_cache_evictions_total") >= 10
        assert cache.metric("segment_cache_objects") == 4
    finally:
        cache.stop()


def test_disk_full_serves_through(upstream):
    moto, proxy = upstream
    objs = put_objects(moto, 4, 2_500_000)
    mnt = run_dir("sc-tmpfs")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)], capture_output=True, text=True)
    assert r.returncode == 0, f"this test needs `mount -t tmpfs` (root) to make a small disk: {r.stderr}"
    try:
        # The budget is the whole disk (a budget above the disk's size is refused at start), but something
        # else on the disk takes half of it: the disk fills before the budget does.
        (mnt / "other-tenant").write_bytes(b"\0" * 3_000_000)
        cache = SegmentCache(moto.url, BUCKET, capacity="100%", cache_dir=mnt / "cache")
        try:
            c = s3_client(cache.url)
            for _ in range(2):
                for k, h in objs.items():
                    assert sha(c.get_object(Bucket=BUCKET, Key=k)["Body"].read()) == h
            assert cache.metric("segment_cache_requests_total", op="get", result="bypass") >= 2
            assert not list((mnt / "cache" / "tmp").iterdir()), "ENOSPC left a temp file"
            # Whatever was committed is whole.
            for p in (mnt / "cache" / "objects").rglob("*.meta"):
                meta = yaml.safe_load(p.read_text())
                assert p.with_name(p.name[:-5]).stat().st_size == meta["size"]
        finally:
            cache.stop()
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_kill_9_during_warm_then_resume(upstream):
    moto, proxy = upstream
    objs = put_objects(moto, 12, 4_000_000)
    objs.update(put_objects(moto, 1, 40_000_000, prefix="files/index_files/9/1/2/3/"))
    run = run_dir("sc-warm")
    cache_dir = run / "cache"
    cfg = cache_config(proxy.url, BUCKET, "1GiB", cache_dir, free_port(), free_port(),
                       warm={"prefixes": ["files/"], "concurrency": 4, "part_size": "4MiB", "in_serve": False})
    cfg_path = run / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    proxy.mode, proxy.delay = "slow", 0.01
    w = Service("warm", [cargo_bin("segment-cache"), "warm", "--config", str(cfg_path)], run / "warm1.log")
    try:
        wait_until(lambda: any((cache_dir / "tmp").glob("*.part")) if (cache_dir / "tmp").exists() else False,
                   60, "the warm to start downloading", proc=w, interval=0.05)
        time.sleep(1.0)
        w.kill()  # SIGKILL mid-download
    finally:
        w.stop()
    assert any((cache_dir / "tmp").glob("*.part")), "expected a download in progress at the kill"
    proxy.mode = "pass"
    r = subprocess.run([cargo_bin("segment-cache"), "warm", "--config", str(cfg_path)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "warm done" in r.stdout, r.stdout
    assert not list((cache_dir / "tmp").iterdir())
    # The index file is first in the plan.
    assert data_bytes(cache_dir) == sum([4_000_000] * 12 + [40_000_000])
    cache = SegmentCache(moto.url, BUCKET, capacity="1GiB", cache_dir=cache_dir)
    try:
        c = s3_client(cache.url)
        for k, h in objs.items():
            assert sha(c.get_object(Bucket=BUCKET, Key=k)["Body"].read()) == h
        assert cache.metric("segment_cache_requests_total", op="get", result="hit") == len(objs)
        assert cache.metric("segment_cache_requests_total", op="get", result="miss") == 0
    finally:
        cache.stop()

"""The aws CLI through segment-cache (in front of moto) against the same calls on moto directly:
byte-for-byte equal objects, listings, ranges, multipart upload, delete; and bad input gets the
S3 error S3 itself would give, with nothing written outside the cache directory."""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.procs import wait_until  # noqa: E402
from harness.segment_cache import SegmentCache, aws, s3_client  # noqa: E402
from harness.services import Moto, run_dir  # noqa: E402

pytestmark = pytest.mark.timeout(600)
BUCKET = "milvus-bucket"


@pytest.fixture(scope="module")
def env():
    moto = Moto()
    moto.client("s3").create_bucket(Bucket=BUCKET)
    cache = SegmentCache(moto.url, BUCKET, capacity="512MiB")
    yield moto, cache
    cache.stop()
    moto.stop()


def _direct(moto, args, **kw):
    return aws(args, moto.url, access_key="testing", secret_key="testing", **kw)


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _files_outside(root: Path, before: set) -> set:
    return {str(p) for p in root.rglob("*")} - before


def test_cp_ls_range_multipart_delete(env):
    moto, cache = env
    work = run_dir("sc-cli")
    small = work / "small.bin"
    small.write_bytes(os.urandom(300_000))
    big = work / "big.bin"  # > 8 MiB: the CLI uploads it in parts (multipart through the cache)
    big.write_bytes(os.urandom(21 * 1024 * 1024 + 123))

    aws(["s3", "cp", str(small), f"s3://{BUCKET}/files/a/small.bin"], cache.url)
    aws(["s3", "cp", str(big), f"s3://{BUCKET}/files/a/big.bin"], cache.url)
    head = json.loads(_direct(moto, ["s3api", "head-object", "--bucket", BUCKET, "--key", "files/a/big.bin"]).stdout)
    assert head["ETag"].endswith("-3\""), head  # it really was a multipart upload

    for name in ("small.bin", "big.bin"):
        for round_ in range(2):  # miss, then hit
            out = work / f"{name}.{round_}"
            aws(["s3", "cp", f"s3://{BUCKET}/files/a/{name}", str(out)], cache.url)
            assert _sha(out) == _sha(work / name)
        d = work / f"{name}.direct"
        _direct(moto, ["s3", "cp", f"s3://{BUCKET}/files/a/{name}", str(d)])
        assert _sha(d) == _sha(work / name)
    assert cache.metric("segment_cache_requests_total", op="get", result="hit") >= 2
    assert cache.metric("segment_cache_requests_total", op="get", result="miss") >= 2

    ls_cache = aws(["s3", "ls", "--recursive", f"s3://{BUCKET}/files/"], cache.url).stdout
    ls_direct = _direct(moto, ["s3", "ls", "--recursive", f"s3://{BUCKET}/files/"]).stdout
    strip = lambda s: sorted(" ".join(line.split()[2:]) for line in s.splitlines())  # noqa: E731
    assert strip(ls_cache) == strip(ls_direct)

    # HEAD through the cache is faithful (size, ETag).
    h_cache = json.loads(aws(["s3api", "head-object", "--bucket", BUCKET, "--key", "files/a/big.bin"], cache.url).stdout)
    assert h_cache["ContentLength"] == head["ContentLength"] == big.stat().st_size
    assert h_cache["ETag"] == head["ETag"]

    data = big.read_bytes()
    n = len(data)
    for rng, want in [("bytes=0-99", data[:100]), ("bytes=1000-", data[1000:]), ("bytes=-4096", data[-4096:]),
                      (f"bytes={n - 10}-{n + 1000}", data[n - 10:]), ("bytes=5-5", data[5:6])]:
        for endpoint, ak, sk in [(cache.url, None, None), (moto.url, "testing", "testing")]:
            out = work / "range.out"
            kw = {"access_key": ak, "secret_key": sk} if ak else {}
            r = json.loads(aws(["s3api", "get-object", "--bucket", BUCKET, "--key", "files/a/big.bin",
                                "--range", rng, str(out)], endpoint, **kw).stdout)
            assert out.read_bytes() == want, (rng, endpoint)
            assert r["ContentLength"] == len(want)
            assert r["ContentRange"].endswith(f"/{n}")

    # Unsatisfiable range: 416 InvalidRange, as S3.
    r = aws(["s3api", "get-object", "--bucket", BUCKET, "--key", "files/a/small.bin", "--range",
             "bytes=999999999-", str(work / "x")], cache.url, check=False)
    assert r.returncode != 0 and "InvalidRange" in r.stderr, r.stderr

    # Overwrite through the cache invalidates the cached copy.
    small2 = work / "small2.bin"
    small2.write_bytes(os.urandom(1000))
    aws(["s3", "cp", str(small2), f"s3://{BUCKET}/files/a/small.bin"], cache.url)
    out = work / "after-overwrite"
    aws(["s3", "cp", f"s3://{BUCKET}/files/a/small.bin", str(out)], cache.url)
    assert out.read_bytes() == small2.read_bytes()

    # Delete through the cache: gone upstream and from the cache.
    aws(["s3", "rm", f"s3://{BUCKET}/files/a/big.bin"], cache.url)
    r = _direct(moto, ["s3api", "head-object", "--bucket", BUCKET, "--key", "files/a/big.bin"], check=False)
    assert r.returncode != 0
    r = aws(["s3api", "get-object", "--bucket", BUCKET, "--key", "files/a/big.bin", str(work / "gone")],
            cache.url, check=False)
    assert r.returncode != 0 and "NoSuchKey" in r.stderr, r.stderr


def test_bad_signatures_and_other_buckets_are_refused(env):
    moto, cache = env
    moto.client("s3").put_object(Bucket=BUCKET, Key="files/secret", Body=b"s3cr3t")
    r = aws(["s3api", "get-object", "--bucket", BUCKET, "--key", "files/secret", "/dev/null"], cache.url,
            secret_key="wrong-secret", check=False)
    assert r.returncode != 0 and "SignatureDoesNotMatch" in r.stderr, r.stderr
    r = aws(["s3api", "get-object", "--bucket", BUCKET, "--key", "files/secret", "/dev/null"], cache.url,
            access_key="nobody", check=False)
    assert r.returncode != 0 and "InvalidAccessKeyId" in r.stderr, r.stderr
    # The sidecar's upstream credentials must not open other buckets.
    moto.client("s3").create_bucket(Bucket="other-bucket")
    r = aws(["s3", "ls", "s3://other-bucket/"], cache.url, check=False)
    assert r.returncode != 0 and "AccessDenied" in r.stderr, r.stderr
    # Unsigned request: 403 AccessDenied with an S3 XML error body.
    c = http.client.HTTPConnection("127.0.0.1", cache.port, timeout=10)
    c.request("GET", f"/{BUCKET}/files/secret")
    resp = c.getresponse()
    body = resp.read().decode()
    assert resp.status == 403 and "<Code>AccessDenied</Code>" in body, (resp.status, body)


def test_malformed_input(env):
    moto, cache = env
    root = cache.dir.parent.parent  # the .run directory holding every service's files
    before = {str(p) for p in root.rglob("*")}
    # Keys with ../ are just keys: stored and read back, never paths.
    work = run_dir("sc-bad")
    f = work / "t.bin"
    f.write_bytes(b"traversal")
    for key in ["../../escape.bin", "files/../../../escape2.bin", "..%2F..%2Fescape3"]:
        r = aws(["s3api", "put-object", "--bucket", BUCKET, "--key", key, "--body", str(f)], cache.url, check=False)
        out = work / "t.out"
        g = aws(["s3api", "get-object", "--bucket", BUCKET, "--key", key, str(out)], cache.url, check=False)
        if r.returncode == 0:
            assert g.returncode == 0 and out.read_bytes() == b"traversal", g.stderr
    new = _files_outside(root, before)
    assert all(p.startswith(str(cache.dir)) or p.startswith(str(work)) or "awscfg" in p
               or "moto" in p for p in new), sorted(new)
    assert not any(Path(p).name.startswith("escape") for p in new), sorted(new)

    # Huge headers: refused with a 4xx, and the server keeps serving.
    c = http.client.HTTPConnection("127.0.0.1", cache.port, timeout=10)
    c.putrequest("GET", f"/{BUCKET}/files/secret")
    c.putheader("X-Amz-Meta-Big", "a" * (1 << 20))
    try:
        c.endheaders()
        status = c.getresponse().status
    except (ConnectionError, http.client.HTTPException):
        status = 431  # the server closed the connection on the oversized header block
    assert 400 <= status < 500, status
    moto.client("s3").put_object(Bucket=BUCKET, Key="files/alive", Body=b"1")
    r = aws(["s3", "ls", f"s3://{BUCKET}/files/"], cache.url)
    assert "alive" in r.stdout, r.stdout

    # Malformed Range: S3 ignores an unparsable Range and returns the whole object; s3s (which
    # checks the signature over the Range header, so it cannot be dropped) answers 400
    # InvalidArgument instead. Either way: never wrong bytes (documented in docs/segment-cache.md).
    moto.client("s3").put_object(Bucket=BUCKET, Key="files/r", Body=b"0123456789")
    for bad in ["bytes=abc", "bytes=5-2", "items=0-1", "bytes=--1"]:
        r = aws(["s3api", "get-object", "--bucket", BUCKET, "--key", "files/r", "--range", bad,
                 str(work / "r.out")], cache.url, check=False)
        if r.returncode == 0:
            assert (work / "r.out").read_bytes() == b"0123456789", bad
        else:
            assert "(InvalidArgument)" in r.stderr or "(InvalidRange)" in r.stderr, (bad, r.stderr)


def test_large_read_miss_is_fetched_in_parallel_parts_and_verified():
    """A miss of an object of at least two `cache.miss_part_size` parts: the first part comes from
    the GET's own body, the rest from ranged GETs; the object is verified whole (CRC32 that moto
    keeps from boto3's upload, or the ETag's MD5 for an object uploaded with no checksum) and the
    client gets exactly the upstream bytes, for a whole and for a ranged read."""
    import boto3
    from botocore.config import Config

    from harness.segment_cache import s3_client
    moto = Moto()
    try:
        moto.client("s3").create_bucket(Bucket=BUCKET)
        with_crc = os.urandom(20_000_000)
        moto.client("s3").put_object(Bucket=BUCKET, Key="files/index_files/1/crc", Body=with_crc)
        plain = boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1", aws_access_key_id="testing",
                             aws_secret_access_key="testing",
                             config=Config(request_checksum_calculation="when_required"))
        no_crc = os.urandom(9_000_000)
        plain.put_object(Bucket=BUCKET, Key="files/index_files/1/md5", Body=no_crc)
        assert not plain.head_object(Bucket=BUCKET, Key="files/index_files/1/md5",
                                     ChecksumMode="ENABLED").get("ChecksumCRC32")

        cache = SegmentCache(moto.url, BUCKET, capacity="512MiB",
                             extra_cache={"miss_part_size": "4MiB", "miss_concurrency": 3})
        try:
            c = s3_client(cache.url)
            body = c.get_object(Bucket=BUCKET, Key="files/index_files/1/crc")["Body"].read()
            assert hashlib.sha256(body).digest() == hashlib.sha256(with_crc).digest()
            # 20 MB in 4 MiB parts: 5 parts, the first from the GET, 4 ranged.
            assert cache.metric("segment_cache_upstream_requests_total", op="get", outcome="ok") == 1
            assert cache.metric("segment_cache_upstream_requests_total", op="get_range", outcome="ok") == 4
            assert cache.metric("segment_cache_verified_objects_total", by="crc32") == 1
            # The help text of crates/segment-cache/src/metric_names.rs, registered at start-up.
            assert "# HELP segment_cache_verified_objects_total Objects fetched into the cache and verified" \
                in cache.metrics_text()

            part = c.get_object(Bucket=BUCKET, Key="files/index_files/1/md5", Range="bytes=8000000-")["Body"].read()
            assert part == no_crc[8_000_000:]
            assert cache.metric("segment_cache_upstream_requests_total", op="get_range", outcome="ok") == 4 + 2
            assert cache.metric("segment_cache_verified_objects_total", by="md5") == 1
            assert cache.metric("segment_cache_requests_total", op="get", result="miss") == 2
            # Both are now hits.
            assert c.get_object(Bucket=BUCKET, Key="files/index_files/1/md5")["Body"].read() == no_crc
            assert cache.metric("segment_cache_requests_total", op="get", result="hit") == 1
        finally:
            cache.stop()
    finally:
        moto.stop()


def test_a_segments_first_miss_reads_the_rest_of_it_ahead(env):
    """Read-ahead against moto through the real aws-sdk client (Milvus 2.3.5 key layout), with the
    default `read_ahead.fields: learned`: the first miss of a segment lists its prefixes and fetches
    its stats log in the background, and its insert logs only of fields the client has read in the
    collection. A second segment then gets the fields read in the first ahead of its reads (hits),
    and field 101, never read (as an indexed vector field's raw binlogs), is fetched for neither.
    The cache's own counters say so."""
    moto, cache = env
    s3 = moto.client("s3")
    def seg(n: int) -> list[str]:
        return [f"files/stats_log/7001/7002/{n}/100/1"] + [
            f"files/insert_log/7001/7002/{n}/{field}/{i}" for i, field in enumerate((0, 1, 100, 101))]
    a, b = seg(7003), seg(7004)
    bodies = {k: os.urandom(50_000 + i) for i, k in enumerate(a + b)}
    for k, body in bodies.items():
        s3.put_object(Bucket=BUCKET, Key=k, Body=body)
    fetched = lambda: cache.metric("segment_cache_read_ahead_objects_total", result="fetched")  # noqa: E731
    hits = lambda: cache.metric("segment_cache_requests_total", op="get", result="hit")  # noqa: E731
    fetched0, bytes0 = fetched(), cache.metric("segment_cache_read_ahead_bytes_total")
    c = s3_client(cache.url)
    # Segment 7003: its first miss (field 0) reads ahead its stats log; fields 1 and 100 are the
    # client's own misses.
    assert c.get_object(Bucket=BUCKET, Key=a[1])["Body"].read() == bodies[a[1]]
    wait_until(lambda: fetched() - fetched0 >= 1, 30, "read-ahead of segment 7003's stats log")
    hits0 = hits()
    for k in (a[0], a[2], a[3]):
        assert c.get_object(Bucket=BUCKET, Key=k)["Body"].read() == bodies[k]
    assert hits() - hits0 == 1, "only the stats log was read ahead for the collection's first segment"
    # Segment 7004: its stats log's miss reads ahead fields 0, 1 and 100, as read in 7003.
    assert c.get_object(Bucket=BUCKET, Key=b[0])["Body"].read() == bodies[b[0]]
    wait_until(lambda: fetched() - fetched0 >= 4, 30, "read-ahead of segment 7004's fields 0, 1, 100")
    hits0 = hits()
    for k in b[1:4]:
        assert c.get_object(Bucket=BUCKET, Key=k)["Body"].read() == bodies[k]
    assert hits() - hits0 == 3, "segment 7004's reads of the fields read in 7003 were hits"
    assert cache.metric("segment_cache_read_ahead_objects_total", result="error") == 0
    assert fetched() - fetched0 == 4, "field 101 was read ahead for neither segment"
    assert cache.metric("segment_cache_read_ahead_bytes_total") - bytes0 == sum(
        len(bodies[k]) for k in [a[0], *b[1:4]])

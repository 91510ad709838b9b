"""The object store, one suite for both backends: a local directory, and S3 over HTTP (moto's server or MinIO)."""

from __future__ import annotations

import multiprocessing
import os
import threading

import pytest

from jupyter_celery.core.errors import (
    ConfigurationError,
    ObjectMissing,
    StoreAccessDenied,
    StoreError,
    StoreUnreachable,
)
from jupyter_celery.core.s3 import MAX_ATTEMPTS, S3Store
from jupyter_celery.core.store import LocalStore, Store, filesystem_type, open_store, safe_to_map
from tests.s3proxy import Fault

PART = 5 << 20  # S3's smallest part: objects above it travel in parallel parts


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> Store:
    if request.param == "local":
        return open_store((tmp_path / "store").as_uri())
    s3 = request.getfixturevalue("s3")
    return open_store(request.getfixturevalue("s3_store_url"), s3_endpoint_url=s3.proxy.url, s3_part_size=PART)


def test_put_get_stat_delete_and_list(store):
    store.put("o/objects/ab/1.pkl", b"abc", {"job": "j1", "role": "input"})
    assert store.get("o/objects/ab/1.pkl") == b"abc"
    assert store.exists("o/objects/ab/1.pkl")
    info = store.stat("o/objects/ab/1.pkl")
    assert (info.key, info.size) == ("o/objects/ab/1.pkl", 3)
    assert info.metadata["job"] == "j1"
    assert info.metadata["role"] == "input"
    assert info.modified > 0
    store.put("o/datasets/x.parquet", b"x")
    assert sorted(store.keys("o/")) == ["o/datasets/x.parquet", "o/objects/ab/1.pkl"]
    assert [i.size for i in store.objects("o/objects/")] == [3]
    store.delete("o/objects/ab/1.pkl")
    store.delete("o/objects/ab/1.pkl")  # idempotent
    assert not store.exists("o/objects/ab/1.pkl")
    assert store.stat("o/objects/ab/1.pkl") is None


def test_read_gives_a_private_writable_buffer(store):
    data = os.urandom(100_000)
    store.put("k", data)
    buffer = store.read("k")
    assert bytes(buffer) == data
    view = memoryview(buffer)
    view[0] ^= 0xFF  # writable, and private: the stored object does not change
    view.release()
    assert store.get("k") == data
    store.put("empty", b"")
    assert bytes(store.read("empty")) == b""


def test_large_objects_travel_in_parts_from_and_to_files(store, tmp_path):
    data = os.urandom(2 * PART + 12345)  # three parts on S3
    with store.staging(".bin") as path:
        path.write_bytes(data)
        store.put_file("big", path, {"role": "output"})
        assert not path.exists()  # the store took the file
    assert store.stat("big").size == len(data)
    assert bytes(store.read("big")) == data


def test_staging_files_are_removed_when_not_stored(store):
    with store.staging() as path:
        path.write_bytes(b"abandoned")
    assert not path.exists()


def test_missing_object_names_key_and_store(store):
    with pytest.raises(ObjectMissing, match=r"'nope' is not in store (file|s3)://.*expired"):
        store.get("nope")
    with pytest.raises(ObjectMissing, match="'nope'"):
        store.read("nope")


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "./a", "a/.hidden"])
def test_invalid_keys_are_refused(store, key):
    with pytest.raises(StoreError):
        store.put(key, b"x")


def test_delete_many(store):
    for i in range(5):
        store.put(f"o/{i}", b"x")
    store.delete_many(f"o/{i}" for i in range(4))
    assert list(store.keys("o/")) == ["o/4"]


def test_writes_are_atomic(store):
    """A reader sees the old object or the whole new one, never a part."""
    big_a, big_b = b"a" * 2_000_000, b"b" * 2_000_000
    store.put("k", big_a)
    seen = set()
    stop = threading.Event()

    def read():
        while not stop.is_set():
            data = store.get("k")
            seen.add((data[:1], len(data)))

    reader = threading.Thread(target=read)
    reader.start()
    for _ in range(5):
        store.put("k", big_b)
        store.put("k", big_a)
    stop.set()
    reader.join()
    assert seen <= {(b"a", 2_000_000), (b"b", 2_000_000)}
    assert list(store.keys()) == ["k"]  # no partial write is visible as an object


# --- the local directory ---------------------------------------------------------------------------


def test_local_metadata_lives_in_a_hidden_sidecar(tmp_path):
    store = LocalStore(tmp_path)
    store.put("a/b.pkl", b"x", {"job": "j"})
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [".b.pkl.meta.json", "b.pkl"]
    assert list(store.keys()) == ["a/b.pkl"]
    store.delete("a/b.pkl")
    assert list((tmp_path / "a").iterdir()) == []


def test_local_store_maps_objects_but_reads_network_filesystems_into_memory(tmp_path):
    store = LocalStore(tmp_path)
    store.put("k", b"0123456789")
    assert store._map  # /tmp is a local filesystem here
    mapped = store.read("k")
    store._map = False  # what a store on NFS does
    copied = store.read("k")
    assert bytes(mapped) == bytes(copied) == b"0123456789"
    store.delete("k")
    assert bytes(mapped) == b"0123456789"  # a mapping outlives the deletion of its file


MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:35 / /mnt/shared rw,relatime shared:20 - nfs4 server:/export rw,vers=4.2
41 22 0:36 / /mnt/my\\040disk rw - fuse.sshfs host:/ rw
"""


@pytest.mark.parametrize(
    ("path", "fstype", "mappable"),
    [("/home/ada/store", "ext4", True), ("/mnt/shared/jc", "nfs4", False), ("/mnt/my disk/x", "fuse.sshfs", False),
     ("/mnt/sharedother", "ext4", True)],
)  # fmt: skip
def test_filesystem_type_from_mountinfo(path, fstype, mappable):
    from pathlib import Path

    assert filesystem_type(Path(path), MOUNTINFO) == fstype
    assert safe_to_map(fstype) is mappable


def test_unwritable_local_store_is_a_clear_error(tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with pytest.raises(StoreError, match=r"in store file://.*not-a-directory"):
        LocalStore(blocker).put("a/b", b"x")


def test_unsupported_store_url():
    with pytest.raises(ConfigurationError, match="s3://bucket/prefix"):
        open_store("gopher://x/y")


# --- S3 --------------------------------------------------------------------------------------------


def s3_store(s3, url, **kw) -> S3Store:
    return S3Store(url, endpoint_url=kw.pop("endpoint_url", s3.proxy.url), part_size=PART, **kw)


def test_s3_bucket_is_created_when_missing(s3, s3_store_url):
    import uuid

    bucket = f"jc-new-{uuid.uuid4().hex[:12]}"
    store = s3_store(s3, f"s3://{bucket}/p")
    store.put("k", b"v")
    assert store.get("k") == b"v"
    assert [r for r in s3.proxy.seen("PUT") if r.path == f"/{bucket}"]  # CreateBucket, once


def test_s3_transient_errors_are_retried(s3, s3_store_url):
    store = s3_store(s3, s3_store_url)
    store.put("warm-up", b"")  # the bucket exists
    s3.proxy.clear()
    s3.proxy.inject(Fault(method="PUT", contains="/k", status=503, code="SlowDown", times=1))
    s3.proxy.inject(Fault(method="PUT", contains="/k", reset=True, times=1))
    store.put("k", b"v")
    assert len(s3.proxy.seen("PUT", "/k")) == 3  # 503, reset, then success
    assert store.get("k") == b"v"


def test_s3_permanent_errors_fail_at_once_naming_the_store(s3, s3_store_url):
    store = s3_store(s3, s3_store_url)
    store.put("warm-up", b"")
    s3.proxy.clear()
    s3.proxy.inject(Fault(method="PUT", contains="/k", status=403, code="InvalidAccessKeyId", times=10))
    with pytest.raises(StoreAccessDenied, match=r"cannot write 'k' in store s3://.* at http://127.0.0.1.*credentials"):
        store.put("k", b"v")
    assert len(s3.proxy.seen("PUT", "/k")) == 1
    s3.proxy.clear()
    s3.proxy.inject(Fault(method="GET", contains="/gone", status=404, code="NoSuchKey", times=10))
    with pytest.raises(ObjectMissing):
        store.get("gone")
    assert len(s3.proxy.seen("GET", "/gone")) == 1


def test_s3_missing_bucket_without_permission(s3):
    store = s3_store(s3, "s3://jc-not-permitted/p")
    s3.proxy.clear()
    s3.proxy.inject(Fault(method="PUT", contains="/jc-not-permitted", status=403, code="AccessDenied", times=10))
    with pytest.raises(StoreAccessDenied, match=r"'jc-not-permitted' .* does not exist, and these credentials may not"):
        store.put("k", b"v")


def test_s3_unreachable_store_is_retried_then_named_without_credentials(s3, monkeypatch):
    from jupyter_celery.cli.redis_server import free_port

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-value")
    store = S3Store("s3://bucket/p", endpoint_url=f"http://127.0.0.1:{free_port()}", part_size=PART)
    with pytest.raises(
        StoreUnreachable, match=rf"s3://bucket/p at http://127.0.0.1:\d+: unreachable after {MAX_ATTEMPTS}"
    ) as info:
        store.put("k", b"v")
    assert "very-secret-value" not in str(info.value)


def test_s3_wrong_credentials_against_a_real_minio(s3, s3_store_url, monkeypatch):
    if s3.moto:
        pytest.skip("moto's server accepts any credentials; the injected 403 above covers it")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    with pytest.raises(StoreAccessDenied) as info:
        s3_store(s3, s3_store_url).put("k", b"v")
    assert "wrong-secret" not in str(info.value)


def _use_in_child(store: S3Store, queue) -> None:
    store.put("from-child", str(os.getpid()).encode())
    queue.put((id(store.client), store._pid))


def test_s3_clients_are_created_per_process_after_fork(s3, s3_store_url):
    store = s3_store(s3, s3_store_url)
    store.put("from-parent", b"x")
    parent_client = id(store.client)
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_use_in_child, args=(store, queue))
    child.start()
    _client_id, pid = queue.get(timeout=60)
    child.join(timeout=60)
    assert child.exitcode == 0
    assert pid == child.pid  # the child built its own client
    assert store.get("from-child") == str(child.pid).encode()
    assert id(store.client) == parent_client
    assert store._pid == os.getpid()


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 1 MiB filesystem (tmpfs), to fill up."""
    import subprocess

    path = tmp_path / "tiny"
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here (needs root): {mounted.stderr.decode().strip()}")
    yield path
    subprocess.run(["umount", str(path)], check=True)


def test_a_full_disk_is_a_clear_error_naming_the_store(tiny_disk, s3, s3_store_url, monkeypatch):
    import tempfile

    import numpy as np
    import pandas as pd

    from jupyter_celery.core.codec import Codec
    from jupyter_celery.core.errors import EncodingError, StoreFull
    from jupyter_celery.core.objects import ObjectTag

    frame = pd.DataFrame({"x": np.arange(500_000)})  # 4 MB
    local = LocalStore(tiny_disk / "store")
    with pytest.raises(StoreFull, match=r"cannot write 'k' in store file://.*/tiny/store: disk full"):
        local.put("k", b"x" * 2_000_000)
    with pytest.raises(EncodingError, match=r"'frame'.*disk full") as info:
        Codec(local, 1000).encode("frame", frame, ObjectTag("ada", "job"))
    assert isinstance(info.value.__cause__, StoreFull)

    monkeypatch.setattr(tempfile, "tempdir", str(tiny_disk))  # where S3 uploads are staged
    remote = open_store(s3_store_url, s3_endpoint_url=s3.proxy.url)
    with pytest.raises(EncodingError, match=rf"no space left in the local staging directory {tiny_disk}") as info:
        Codec(remote, 1000).encode("frame", frame, ObjectTag("ada", "job"))
    assert isinstance(info.value.__cause__, StoreFull)

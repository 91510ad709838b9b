"""Job objects, content-addressed: an object's key is the digest of its bytes, so it is stored once.

The digest is xxh3-128 (tens of GB/s: a few percent of the cost of serialising, where blake2b
would cost as much as serialising; measured in ``benchmarks/README.md``). For Arrow data it is
taken over the data itself, before serialising (:func:`jupyter_celery.core.frames.digest`), so a
metadata look-up (HEAD) tells whether the store already holds the object before any work is
done; other values are hashed once serialised. Only a missing object is written: a second
submission of unchanged data uploads nothing, and serialises nothing either when it is a frame.

The digest is not cryptographic: it names content within one owner's prefix, where only that
owner's own jobs write.
"""

from __future__ import annotations

import mmap
import time
from dataclasses import dataclass
from pathlib import Path

import xxhash

from jupyter_celery.core.protocol import OBJECT_METADATA, StoreKeys
from jupyter_celery.core.store import Store


@dataclass(frozen=True)
class ObjectTag:
    """Who writes an object, and why: carried in the object's metadata."""

    owner: str
    job: str = ""
    role: str = "input"

    def metadata(self) -> dict[str, str]:
        """The object's metadata (the fields of ``OBJECT_METADATA``), created now."""
        return dict(zip(OBJECT_METADATA, (self.owner, self.job, self.role, f"{time.time():.3f}"), strict=True))


@dataclass(frozen=True)
class StoredObject:
    """Where a value's bytes are, and whether this call wrote them (False: the store had them already)."""

    key: str
    size: int
    digest: str
    written: bool


def digest_bytes(data: bytes | bytearray | memoryview) -> str:
    """The hex xxh3-128 digest of ``data``."""
    return xxhash.xxh3_128_hexdigest(data)


def digest_file(path: Path) -> str:
    """The hex xxh3-128 digest of a file's contents (read through a mapping: no copy)."""
    with path.open("rb") as f:
        if path.stat().st_size == 0:
            return digest_bytes(b"")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
            return xxhash.xxh3_128_hexdigest(view)


class Objects:
    """Writes job objects to ``store`` under content-addressed keys; counts what it really wrote."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.bytes_written = 0  # since this process started: what reached the store, not what was deduplicated

    def put_bytes(self, data: bytes, ext: str, tag: ObjectTag) -> StoredObject:
        """Store ``data`` (unless the store has these bytes already)."""
        digest = digest_bytes(data)
        key = StoreKeys.object(tag.owner, digest, ext)
        if self.store.exists(key):
            return StoredObject(key, len(data), digest, written=False)
        self.store.put(key, data, tag.metadata())
        self.bytes_written += len(data)
        return StoredObject(key, len(data), digest, written=True)

    def find(self, owner: str, digest: str, ext: str) -> StoredObject | None:
        """The object of ``owner`` with this digest, if the store has it (one metadata look-up)."""
        key = StoreKeys.object(owner, digest, ext)
        info = self.store.stat(key)
        return None if info is None else StoredObject(key, info.size, digest, written=False)

    def put_staged(self, path: Path, ext: str, tag: ObjectTag, digest: str | None = None) -> StoredObject:
        """Store the staged file at ``path`` (consumed) unless the store has its bytes already.

        ``digest`` names the content when the caller knows it (a digest of the data the file serialises);
        otherwise the file's bytes are hashed.
        """
        size = path.stat().st_size
        digest = digest or digest_file(path)
        key = StoreKeys.object(tag.owner, digest, ext)
        if self.store.exists(key):
            return StoredObject(key, size, digest, written=False)
        self.store.put_file(key, path, tag.metadata())
        self.bytes_written += size
        return StoredObject(key, size, digest, written=True)

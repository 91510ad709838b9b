"""The object store: where values too large for a message travel, by key (claim check).

One interface, :class:`Store`; backends are chosen by URL scheme with :func:`open_store`:
:class:`LocalStore` (``file:///path``, the embedded stack's default) and
:class:`~jupyter_celery.core.s3.S3Store` (``s3://bucket/prefix``: MinIO, AWS, any S3-compatible
endpoint). Keys are ``/``-separated relative paths (the layout is in :mod:`jupyter_celery.core.protocol`).

Large objects never need a full extra copy in memory on their way: a writer prepares the object
in a staging file (:meth:`Store.staging`) and hands it over with :meth:`Store.put_file` (the local
store renames it into place; S3 uploads it in parallel parts), and a reader gets a writable buffer
of the object with :meth:`Store.read` (the local store maps the file copy-on-write; S3 downloads
it in parallel ranges straight into memory).
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import mmap
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union
from urllib.parse import unquote, urlsplit

from jupyter_celery.core.errors import (
    ConfigurationError,
    ObjectMissing,
    StoreAccessDenied,
    StoreError,
    StoreFull,
)
from jupyter_celery.core.settings import DEFAULT_S3_PART_MB, Settings, redact_url

# What Store.read returns: writable, and usable wherever a bytes-like object is (pickle, pyarrow, numpy).
ObjectBuffer = Union[mmap.mmap, bytearray]  # noqa: UP007 - a runtime alias, and the floor is Python 3.10
READ_CHUNK = 64 << 20
# Filesystems where another machine may delete a file under a mapping (a later page-in is then SIGBUS):
# objects on these are read into memory instead of being mapped.
NETWORK_FILESYSTEMS = frozenset({"nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "glusterfs", "lustre", "9p", "afs"})


@dataclass(frozen=True)
class ObjectInfo:
    """What the store knows about one object."""

    key: str
    size: int
    modified: float  # seconds since the epoch: when the object was written
    metadata: Mapping[str, str] = field(default_factory=dict)  # empty when listed (S3 lists no metadata)


class Store(ABC):
    """A flat key -> bytes object store with per-object metadata."""

    url: str

    @abstractmethod
    def put(self, key: str, data: bytes, metadata: Mapping[str, str] | None = None) -> None:
        """Write ``data`` under ``key``; readers see the old object or the whole new one."""

    @abstractmethod
    def put_file(self, key: str, path: Path, metadata: Mapping[str, str] | None = None) -> None:
        """Store the file at ``path`` (made with :meth:`staging`) under ``key``; the file is consumed."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The bytes under ``key``; :class:`ObjectMissing` when there are none."""

    @abstractmethod
    def read(self, key: str) -> ObjectBuffer:
        """A private, writable buffer of the object under ``key``, made without an extra copy where possible."""

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo | None:
        """Size, time and metadata of ``key`` (without reading it), or None when there is no such object."""

    def exists(self, key: str) -> bool:
        """Whether ``key`` holds an object (without reading it)."""
        return self.stat(key) is not None

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; no error when it is already gone."""

    def delete_many(self, keys: Iterable[str]) -> None:
        """Remove several keys (backends may batch this)."""
        for key in keys:
            self.delete(key)

    @abstractmethod
    def objects(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """The objects whose keys start with ``prefix`` (their metadata may be left empty)."""

    def keys(self, prefix: str = "") -> Iterator[str]:
        """The keys under ``prefix``."""
        return (info.key for info in self.objects(prefix))

    @abstractmethod
    def staging(self, suffix: str = "") -> contextlib.AbstractContextManager[Path]:
        """A fresh local file path to prepare an object in; removed on exit unless :meth:`put_file` took it."""

    def partial_writes(self, before: float, *, delete: bool) -> list[ObjectInfo]:
        """Staged files an interrupted writer left behind, last written before ``before``; removed if ``delete``."""
        return []

    def describe(self) -> str:
        """The store's URL, safe to print."""
        return redact_url(self.url)

    def missing(self, key: str) -> ObjectMissing:
        return ObjectMissing(f"object {key!r} is not in store {self.describe()} (never written, or expired)")

    @staticmethod
    def check_key(key: str) -> str:
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
            raise StoreError(f"invalid store key {key!r}")
        return key


def filesystem_type(path: Path, mountinfo: str | None = None) -> str:
    """The type of the filesystem ``path`` is on (``ext4``, ``nfs4``...), from ``/proc/self/mountinfo``.

    Returns ``""`` when it cannot be told (no ``/proc``).
    """
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return ""
    target = str(path)
    best, fstype = "", ""
    for line in mountinfo.splitlines():
        before, _, after = line.partition(" - ")
        fields = before.split()
        if len(fields) < 5 or not after:
            continue
        mount_point = fields[4].encode().decode("unicode_escape")  # spaces are written as \040
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, fstype = mount_point, after.split()[0]
    return fstype


def safe_to_map(fstype: str) -> bool:
    """Whether files on a filesystem of this type can stay mapped while another machine may delete them."""
    return fstype not in NETWORK_FILESYSTEMS and not fstype.startswith("fuse")


def disk_full(exc: OSError) -> bool:
    """Whether ``exc`` says no space is left (pyarrow's I/O errors carry it in the message only)."""
    return exc.errno == errno.ENOSPC or "No space left on device" in str(exc)


def read_into_memory(fileobj: io.BufferedIOBase | io.RawIOBase, size: int) -> ObjectBuffer:
    """Read ``size`` bytes from a binary file into fresh anonymous memory (huge pages where the OS allows)."""
    buffer = mmap.mmap(-1, size)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        with contextlib.suppress(OSError):
            buffer.madvise(mmap.MADV_HUGEPAGE)  # fewer page faults for big objects
    view = memoryview(buffer)
    try:
        done = 0
        while done < size:
            n = fileobj.readinto(view[done : done + READ_CHUNK])
            if not n:
                raise EOFError(f"object ended after {done} of {size} bytes")
            done += n
    finally:
        view.release()
    return buffer


class LocalStore(Store):
    """A directory on a local or shared filesystem (the embedded stack's default).

    Writes are atomic (a staged file renamed into place): a reader never sees a half-written
    object. An object's metadata lives in a hidden sidecar file next to it (``.<name>.meta.json``).
    :meth:`read` maps the file copy-on-write (no copy, pages shared with the OS cache) unless the
    directory is on a network filesystem, where it reads the object into memory.
    """

    STAGING = ".staging"

    def __init__(self, root: Path, url: str | None = None) -> None:
        self.root = root
        self.url = url or root.as_uri()
        self._map = safe_to_map(filesystem_type(root.resolve()))

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*self.check_key(key).split("/"))

    @staticmethod
    def _meta_path(path: Path) -> Path:
        return path.with_name(f".{path.name}.meta.json")

    def _fail(self, action: str, key: str, exc: OSError) -> StoreError:
        where = f"cannot {action} {key!r} in store {self.describe()}"
        if disk_full(exc):
            return StoreFull(f"{where}: disk full")
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return StoreAccessDenied(f"{where}: permission denied")
        return StoreError(f"{where}: {exc.strerror or exc}")

    @contextlib.contextmanager
    def staging(self, suffix: str = "") -> Iterator[Path]:
        directory = self.root / self.STAGING
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(suffix=f"{suffix}.part", dir=directory)
            os.close(fd)
        except OSError as exc:
            raise self._fail("stage an object", self.STAGING, exc) from exc
        path = Path(name)
        try:
            yield path
        except OSError as exc:
            raise self._fail("stage an object", self.STAGING, exc) from exc
        finally:
            path.unlink(missing_ok=True)

    def partial_writes(self, before: float, *, delete: bool) -> list[ObjectInfo]:
        found: list[ObjectInfo] = []
        directory = self.root / self.STAGING
        for path in sorted(directory.glob("*.part")) if directory.is_dir() else []:
            with contextlib.suppress(FileNotFoundError):
                st = path.stat()
                if st.st_mtime < before:
                    found.append(ObjectInfo(f"{self.STAGING}/{path.name}", st.st_size, st.st_mtime))
                    if delete:
                        path.unlink()
        return found

    def put(self, key: str, data: bytes, metadata: Mapping[str, str] | None = None) -> None:
        self.check_key(key)
        with self.staging() as path:
            try:
                path.write_bytes(data)
            except OSError as exc:
                raise self._fail("write", key, exc) from exc
            self.put_file(key, path, metadata)

    def put_file(self, key: str, path: Path, metadata: Mapping[str, str] | None = None) -> None:
        dest = self._path(key)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            if metadata is not None:  # the sidecar first: an object is never seen without its metadata
                self._write_atomically(self._meta_path(dest), json.dumps(dict(metadata)).encode())
            try:
                os.replace(path, dest)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                self._write_atomically(dest, None, source=path)
                path.unlink(missing_ok=True)
        except OSError as exc:
            raise self._fail("write", key, exc) from exc

    @staticmethod
    def _write_atomically(dest: Path, data: bytes | None, source: Path | None = None) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                if source is not None:
                    with source.open("rb") as src:
                        shutil.copyfileobj(src, f, READ_CHUNK)
                else:
                    f.write(data or b"")
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise self.missing(key) from None
        except OSError as exc:
            raise self._fail("read", key, exc) from exc

    def read(self, key: str) -> ObjectBuffer:
        try:
            with self._path(key).open("rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size == 0:
                    return bytearray()
                if self._map:
                    # Copy-on-write: writes stay private, and the file may be deleted while mapped.
                    return mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
                return read_into_memory(f, size)
        except FileNotFoundError:
            raise self.missing(key) from None
        except OSError as exc:
            raise self._fail("read", key, exc) from exc

    def stat(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._fail("look up", key, exc) from exc
        if not path.is_file():
            return None
        try:
            metadata = json.loads(self._meta_path(path).read_text())
        except (OSError, ValueError):
            metadata = {}
        return ObjectInfo(key, st.st_size, st.st_mtime, metadata)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
            self._meta_path(path).unlink(missing_ok=True)
        except OSError as exc:
            raise self._fail("delete", key, exc) from exc

    def objects(self, prefix: str = "") -> Iterator[ObjectInfo]:
        if not self.root.is_dir():
            return
        for dirpath, dirs, files in os.walk(self.root):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # staging area, never objects
            for name in sorted(files):
                if name.startswith("."):  # sidecars and partial writes
                    continue
                path = Path(dirpath, name)
                key = path.relative_to(self.root).as_posix()
                if not key.startswith(prefix):
                    continue
                with contextlib.suppress(FileNotFoundError):  # deleted while listing
                    st = path.stat()
                    yield ObjectInfo(key, st.st_size, st.st_mtime)


def open_store(url: str, *, s3_endpoint_url: str = "", s3_part_size: int = DEFAULT_S3_PART_MB << 20) -> Store:
    """The store behind ``url``: ``file:///path`` or ``s3://bucket/prefix``."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigurationError(f"file store URLs take no host: {redact_url(url)!r}")
        return LocalStore(Path(unquote(parts.path)), url)
    if parts.scheme == "s3":
        from jupyter_celery.core.s3 import S3Store

        return S3Store(url, endpoint_url=s3_endpoint_url, part_size=s3_part_size)
    raise ConfigurationError(f"unsupported store URL {redact_url(url)!r} (use file:///path or s3://bucket/prefix)")


def store_for(settings: Settings) -> Store:
    """The store the settings point at."""
    return open_store(settings.store_url, s3_endpoint_url=settings.s3_endpoint_url, s3_part_size=settings.s3_part_size)

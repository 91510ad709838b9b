"""The object store: where values too large for a message travel, by key (claim check).

One interface, :class:`Store`; backends are chosen by URL scheme with :func:`open_store`.
Keys are ``/``-separated relative paths (``<owner>/jobs/<job id>/<name>``).
"""

from __future__ import annotations

import errno
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

from jupyter_celery.core.errors import ConfigurationError, ObjectMissing, StoreError
from jupyter_celery.core.settings import redact_url


class Store(ABC):
    """A flat key -> bytes object store."""

    url: str

    @abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Write ``data`` under ``key``; readers see the old object or the whole new one."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The bytes under ``key``; :class:`ObjectMissing` when there are none."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether ``key`` holds an object (without reading it)."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; no error when it is already gone."""

    @abstractmethod
    def keys(self, prefix: str = "") -> Iterator[str]:
        """The keys under ``prefix``."""

    def describe(self) -> str:
        """The store's URL, safe to print."""
        return redact_url(self.url)

    @staticmethod
    def check_key(key: str) -> str:
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise StoreError(f"invalid store key {key!r}")
        return key


class LocalStore(Store):
    """A directory on a local or shared filesystem (the embedded stack's default)."""

    def __init__(self, root: Path, url: str | None = None) -> None:
        self.root = root
        self.url = url or root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*self.check_key(key).split("/"))

    def _fail(self, action: str, key: str, exc: OSError) -> StoreError:
        if exc.errno == errno.ENOSPC:
            reason = "disk full"
        elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            reason = "permission denied"
        else:
            reason = exc.strerror or str(exc)
        return StoreError(f"cannot {action} {key!r} in store {self.describe()}: {reason}")

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise self._fail("write", key, exc) from exc

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise ObjectMissing(
                f"object {key!r} is not in store {self.describe()} (never written, or expired)"
            ) from None
        except OSError as exc:
            raise self._fail("read", key, exc) from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise self._fail("delete", key, exc) from exc

    def keys(self, prefix: str = "") -> Iterator[str]:
        base = self.root
        if not base.is_dir():
            return
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                if name.startswith(".") and name.endswith(".part"):
                    continue
                key = Path(dirpath, name).relative_to(base).as_posix()
                if key.startswith(prefix):
                    yield key


def open_store(url: str) -> Store:
    """The store behind ``url`` (``file:///path``)."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigurationError(f"file store URLs take no host: {redact_url(url)!r}")
        return LocalStore(Path(unquote(parts.path)), url)
    raise ConfigurationError(f"unsupported store URL {redact_url(url)!r} (use file:///path)")

"""The S3 backend of the object store (MinIO, AWS, any S3-compatible endpoint), through boto3.

- One boto3 client per process, created on first use: a prefork worker child builds its own after
  the fork (clients and their connection pools must not cross a fork).
- Large objects move through boto3's transfer manager: multipart upload from a staged file,
  parallel ranged download straight into memory (:meth:`S3Store.read`), parts of
  ``JUPYTER_CELERY_S3_PART_MB``.
- Transient failures (timeouts, 5xx, throttling, connection resets) are retried by botocore's
  ``standard`` retry mode: exponential backoff with jitter, ``MAX_ATTEMPTS`` attempts in all.
  Permanent ones (403, 404) fail at once.
- The bucket is created on first use when it is missing and the credentials may create it.
- Request checksums are computed only where S3 requires them (DESIGN §6: the default CRC32 costs
  about 25% on put_object); the content-addressed key already names the bytes.
- Credentials come from the standard AWS chain (environment, profile, instance role) and never
  appear in messages; errors name the bucket, prefix and endpoint.
"""

from __future__ import annotations

import contextlib
import io
import mmap
import os
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, PartialCredentialsError
from botocore.exceptions import ConnectionError as BotoConnectionError
from s3transfer.manager import TransferManager
from s3transfer.subscribers import BaseSubscriber

from jupyter_celery.core.errors import (
    ConfigurationError,
    StoreAccessDenied,
    StoreError,
    StoreFull,
    StoreUnreachable,
)
from jupyter_celery.core.settings import redact_url
from jupyter_celery.core.store import ObjectBuffer, ObjectInfo, Store, disk_full

MAX_ATTEMPTS = 4  # botocore "standard" mode: the first try and up to 3 retries, backoff with jitter
CONCURRENCY = 8  # parallel parts per transfer
MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
DENIED_CODES = frozenset(
    {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled", "ExpiredToken",
     "InvalidToken", "InvalidClientTokenId"}
)  # fmt: skip
BUCKET_EXISTS_CODES = frozenset({"BucketAlreadyOwnedByYou", "BucketAlreadyExists"})


class _KnownSize(BaseSubscriber):  # type: ignore[misc]
    """Tells the transfer manager the object's size, so a download needs no second HEAD request."""

    def __init__(self, size: int) -> None:
        self.size = size

    def on_queued(self, future: Any, **kwargs: Any) -> None:
        future.meta.provide_transfer_size(self.size)


class S3Store(Store):
    """Objects under ``s3://bucket/prefix``, at ``endpoint_url`` (empty: AWS)."""

    def __init__(self, url: str, *, endpoint_url: str = "", part_size: int = 64 << 20) -> None:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ConfigurationError(f"S3 store URLs look like s3://bucket/prefix, got {redact_url(url)!r}")
        self.url = url
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        self.endpoint_url = endpoint_url
        self.transfer = TransferConfig(
            multipart_threshold=part_size, multipart_chunksize=part_size, max_concurrency=CONCURRENCY
        )
        self._lock = threading.Lock()
        self._client: Any = None
        self._pid = 0
        self._bucket_ready = False

    def describe(self) -> str:
        where = f" at {redact_url(self.endpoint_url)}" if self.endpoint_url else ""
        return f"{redact_url(self.url)}{where}"

    def _key(self, key: str) -> str:
        self.check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    @property
    def client(self) -> Any:
        """This process's boto3 client (a forked child builds its own)."""
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                config = Config(
                    retries={"mode": "standard", "max_attempts": MAX_ATTEMPTS},
                    connect_timeout=5,
                    read_timeout=60,
                    max_pool_connections=2 * CONCURRENCY,
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                    s3={"addressing_style": "path" if self.endpoint_url else "auto"},
                )
                session = boto3.session.Session()
                self._client = session.client("s3", endpoint_url=self.endpoint_url or None, config=config)
                self._pid = os.getpid()
                self._bucket_ready = False
            return self._client

    def _ready(self) -> Any:
        """The client, once the bucket is known to exist (created when missing and permitted)."""
        client = self.client
        if self._bucket_ready:
            return client
        try:
            client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if _code(exc) not in MISSING_CODES | {"NoSuchBucket"}:
                raise self._error("open bucket", self.bucket, exc) from exc
            self._create_bucket(client)
        except (BotoCoreError, OSError) as exc:
            raise self._error("open bucket", self.bucket, exc) from exc
        self._bucket_ready = True
        return client

    def _create_bucket(self, client: Any) -> None:
        region = client.meta.region_name
        args: dict[str, Any] = {"Bucket": self.bucket}
        if region and region != "us-east-1":
            args["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            client.create_bucket(**args)
        except ClientError as exc:
            if _code(exc) in BUCKET_EXISTS_CODES:
                return
            if _code(exc) in DENIED_CODES or _status(exc) == 403:
                raise StoreAccessDenied(
                    f"bucket {self.bucket!r} of store {self.describe()} does not exist, and these credentials "
                    "may not create it: create it, or use credentials that may"
                ) from exc
            raise self._error("create bucket", self.bucket, exc) from exc

    def _error(self, action: str, key: str, exc: BaseException) -> StoreError:  # noqa: PLR0911 - one per failure
        """The project's error for a failure of boto3 (or of the local disk while staging)."""
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, (ClientError, BotoCoreError, OSError)):
            cause = cause.__context__  # boto3 wraps transfer failures (S3UploadFailedError)
        cause = cause or exc
        where = f"cannot {action} {key!r} in store {self.describe()}"
        if isinstance(cause, ClientError):
            code, status = _code(cause), _status(cause)
            if code in MISSING_CODES:
                return self.missing(key)
            if code in DENIED_CODES or status == 403:
                return StoreAccessDenied(
                    f"{where}: access denied ({code}); check the credentials (AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE) and the bucket's policy"
                )
            if code == "NoSuchBucket":
                return StoreError(f"{where}: bucket {self.bucket!r} does not exist")
            return StoreError(f"{where}: the store answered {code} (HTTP {status}) after {MAX_ATTEMPTS} attempts")
        if isinstance(cause, (NoCredentialsError, PartialCredentialsError)):
            return StoreAccessDenied(
                f"{where}: no AWS credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
            )
        if isinstance(cause, BotoConnectionError):  # refused, reset, timed out: after the retries
            return StoreUnreachable(f"{where}: unreachable after {MAX_ATTEMPTS} attempts ({cause})")
        if isinstance(cause, OSError) and disk_full(cause):
            return StoreFull(f"{where}: no space left in the local staging directory {tempfile.gettempdir()}")
        return StoreError(f"{where}: {type(cause).__name__}: {cause}")

    @contextlib.contextmanager
    def _translated(self, action: str, key: str) -> Iterator[None]:
        try:
            yield
        except StoreError:
            raise
        except (ClientError, BotoCoreError, OSError, ValueError) as exc:
            raise self._error(action, key, exc) from exc

    @contextlib.contextmanager
    def staging(self, suffix: str = "") -> Iterator[Path]:
        """A file in the local temp directory (``$TMPDIR``), where uploads are prepared."""
        with self._translated("stage", "an object"):
            fd, name = tempfile.mkstemp(prefix="jupyter-celery-", suffix=f"{suffix}.part")
            os.close(fd)
        path = Path(name)
        try:
            with self._translated("stage", "an object"):
                yield path
        finally:
            path.unlink(missing_ok=True)

    def put(self, key: str, data: bytes, metadata: Mapping[str, str] | None = None) -> None:
        with self._translated("write", key):
            self._ready().upload_fileobj(
                io.BytesIO(data), self.bucket, self._key(key), ExtraArgs={"Metadata": dict(metadata or {})},
                Config=self.transfer,
            )  # fmt: skip

    def put_file(self, key: str, path: Path, metadata: Mapping[str, str] | None = None) -> None:
        with self._translated("write", key):
            # by file name: the transfer manager streams parts from the file (given a file object, it reads
            # each part into memory first: the whole object, for one below the part size)
            self._ready().upload_file(
                str(path),
                self.bucket,
                self._key(key),
                ExtraArgs={"Metadata": dict(metadata or {})},
                Config=self.transfer,
            )
            path.unlink(missing_ok=True)

    def get(self, key: str) -> bytes:
        with self._translated("read", key):
            body = self._ready().get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
            try:
                data: bytes = body.read()
            finally:
                body.close()
            return data

    def read(self, key: str) -> ObjectBuffer:
        info = self.stat(key)
        if info is None:
            raise self.missing(key)
        if info.size == 0:
            return bytearray()
        buffer = mmap.mmap(-1, info.size)
        if hasattr(mmap, "MADV_HUGEPAGE"):
            with contextlib.suppress(OSError):
                buffer.madvise(mmap.MADV_HUGEPAGE)
        with self._translated("read", key), TransferManager(self.client, self.transfer) as manager:
            # ranged parts in parallel, each written at its offset of the buffer (a seekable file)
            manager.download(self.bucket, self._key(key), buffer, subscribers=[_KnownSize(info.size)]).result()
        buffer.seek(0)
        return buffer

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            head = self._ready().head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if _code(exc) in MISSING_CODES:
                return None
            raise self._error("look up", key, exc) from exc
        except (BotoCoreError, OSError) as exc:
            raise self._error("look up", key, exc) from exc
        return ObjectInfo(key, int(head["ContentLength"]), head["LastModified"].timestamp(), head.get("Metadata", {}))

    def delete(self, key: str) -> None:
        with self._translated("delete", key):
            self._ready().delete_object(Bucket=self.bucket, Key=self._key(key))

    def delete_many(self, keys: Iterable[str]) -> None:
        batch: list[str] = []
        for key in keys:
            batch.append(key)
            if len(batch) == 1000:  # the most one DeleteObjects request takes
                self._delete_batch(batch)
                batch = []
        if batch:
            self._delete_batch(batch)

    def _delete_batch(self, keys: list[str]) -> None:
        with self._translated("delete", keys[0]):
            reply = self._ready().delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": self._key(k)} for k in keys], "Quiet": True}
            )
        errors = reply.get("Errors") or []
        if errors:
            first = errors[0]
            raise StoreError(
                f"cannot delete {len(errors)} object(s) in store {self.describe()}, "
                f"e.g. {first.get('Key')!r}: {first.get('Code')} {first.get('Message', '')}"
            )

    def objects(self, prefix: str = "") -> Iterator[ObjectInfo]:
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        with self._translated("list", prefix or "/"):
            pages = self._ready().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full)
            for page in pages:
                for item in page.get("Contents", []):
                    yield ObjectInfo(item["Key"][strip:], int(item["Size"]), item["LastModified"].timestamp())


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))

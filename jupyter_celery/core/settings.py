"""The one frozen settings object, built at each entry point (kernel, worker, CLI).

Values come from environment variables, falling back to the connection file that
``jupyter-celery up`` writes in the state directory:

==================================  ============================================  =============================
variable                            meaning                                       default
==================================  ============================================  =============================
``JUPYTER_CELERY_BROKER_URL``       Redis URL of the Celery broker                connection file
``JUPYTER_CELERY_RESULT_URL``       Redis URL of the Celery result backend        the broker URL
``JUPYTER_CELERY_EVENTS_URL``       Redis URL of the job streams                  the broker URL
``JUPYTER_CELERY_STORE_URL``        object store (``file:///path``, ``s3://b/p``)  connection file
``JUPYTER_CELERY_S3_ENDPOINT_URL``  S3 endpoint (MinIO...), AWS when unset        (AWS)
``JUPYTER_CELERY_S3_PART_MB``       multipart part size for S3 transfers, MiB     64
``JUPYTER_CELERY_FRAME_FORMAT``     DataFrames of jobs: ``ipc`` or ``parquet``    ipc
``JUPYTER_CELERY_INLINE_LIMIT``     bytes above which a value goes to the store   32768
``JUPYTER_CELERY_OWNER``            whose jobs these are                          the login name
``JUPYTER_CELERY_STATE_DIR``        where ``up`` keeps its state                  ~/.local/state/jupyter-celery
``JUPYTER_CELERY_JOB_TTL``          seconds a finished job's record is kept       604800 (7 days)
``JUPYTER_CELERY_HEARTBEAT_INTERVAL`` seconds between worker heartbeats             5 (dead after 4 missed)
``JUPYTER_CELERY_LIVENESS_INTERVAL`` seconds of silence before a job is checked   30
``JUPYTER_CELERY_CANCEL_GRACE``     seconds a cancelled job may take to stop      10
==================================  ============================================  =============================

Passwords never leave this module in clear text: ``repr`` and :func:`redact_url` mask them.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from jupyter_celery.core.errors import ConfigurationError

ENV_PREFIX = "JUPYTER_CELERY_"
# Every variable read here, without the prefix (the README's configuration table lists them all).
VARIABLES = (
    "BROKER_URL",
    "RESULT_URL",
    "EVENTS_URL",
    "STORE_URL",
    "S3_ENDPOINT_URL",
    "S3_PART_MB",
    "FRAME_FORMAT",
    "INLINE_LIMIT",
    "OWNER",
    "STATE_DIR",
    "JOB_TTL",
    "HEARTBEAT_INTERVAL",
    "LIVENESS_INTERVAL",
    "CANCEL_GRACE",
)
CONNECTION_FILE = "stack.json"
DEFAULT_INLINE_LIMIT = 32 * 1024
DEFAULT_JOB_TTL = 7 * 24 * 3600
DEFAULT_S3_PART_MB = 64
# How the DataFrames of jobs are stored: Arrow IPC (the default: measured in benchmarks/README.md) or Parquet.
# Named datasets are always Parquet, the format other tools read straight from the bucket.
FRAME_FORMATS = ("ipc", "parquet")
STORE_SCHEMES = ("file", "s3")
REDIS_SCHEMES = ("redis", "rediss", "unix")
OWNER_RE = re.compile(r"[A-Za-z0-9._@-]{1,128}")


def redact_url(url: str) -> str:
    """Mask the password of a URL: ``redis://:s3cret@host:6379/0`` -> ``redis://:***@host:6379/0``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def default_state_dir(env: Mapping[str, str]) -> Path:
    if env.get(ENV_PREFIX + "STATE_DIR"):
        return Path(env[ENV_PREFIX + "STATE_DIR"]).expanduser()
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "jupyter-celery"


def read_connection_file(state_dir: Path) -> dict[str, Any] | None:
    """The connection file written by ``jupyter-celery up``, or None when there is none."""
    path = state_dir / CONNECTION_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigurationError(f"connection file {path} is unreadable: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigurationError(f"connection file {path} does not hold a JSON object")
    return data


def _check_redis_url(name: str, url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in REDIS_SCHEMES:
        raise ConfigurationError(
            f"{ENV_PREFIX}{name} must be a Redis URL ({', '.join(s + '://' for s in REDIS_SCHEMES)}), "
            f"got {redact_url(url)!r}"
        )
    if parts.username and parts.password is None:
        warnings.warn(
            f"{ENV_PREFIX}{name} has a user name but no password ({redact_url(url)}); "
            "the password form is redis://:PASSWORD@host",
            stacklevel=3,
        )
    return url


def _check_store_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in STORE_SCHEMES or (parts.scheme == "s3" and not parts.netloc):
        raise ConfigurationError(
            f"{ENV_PREFIX}STORE_URL must be file:///path or s3://bucket/prefix (got {redact_url(url)!r})"
        )
    return url


def _check_endpoint_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(
            f"{ENV_PREFIX}S3_ENDPOINT_URL must be an http(s) URL such as http://minio:9000 (got {redact_url(url)!r})"
        )
    return url


def _part_size(raw: str) -> int:
    megabytes = _positive_int("S3_PART_MB", raw)
    if megabytes < 5:
        raise ConfigurationError(f"{ENV_PREFIX}S3_PART_MB must be at least 5 (S3's smallest part), got {megabytes}")
    return megabytes << 20


def _choice(name: str, raw: str, choices: tuple[str, ...]) -> str:
    if raw not in choices:
        raise ConfigurationError(f"{ENV_PREFIX}{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def _check_owner(owner: str) -> str:
    if not OWNER_RE.fullmatch(owner):
        raise ConfigurationError(
            f"{ENV_PREFIX}OWNER must be letters, digits and . _ @ - (it names keys and store paths), got {owner!r}"
        )
    return owner


def _positive_float(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{ENV_PREFIX}{name} must be a number of seconds, got {raw!r}") from None
    if not value > 0:
        raise ConfigurationError(f"{ENV_PREFIX}{name} must be > 0, got {raw!r}")
    return value


def _positive_int(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{ENV_PREFIX}{name} must be an integer, got {raw!r}") from None
    if value < 0:
        raise ConfigurationError(f"{ENV_PREFIX}{name} must be >= 0, got {value}")
    return value


@dataclass(frozen=True)
class Settings:
    """Connection and behaviour settings shared by every side. Build one with :meth:`from_env`."""

    broker_url: str = field(repr=False)
    result_url: str = field(repr=False)
    events_url: str = field(repr=False)
    store_url: str = field(repr=False)
    s3_endpoint_url: str = field(default="", repr=False)  # empty: AWS's own endpoints
    s3_part_size: int = DEFAULT_S3_PART_MB * 1024 * 1024
    frame_format: str = "ipc"
    inline_limit: int = DEFAULT_INLINE_LIMIT
    owner: str = ""
    state_dir: Path = Path()
    job_ttl: int = DEFAULT_JOB_TTL
    key_prefix: str = "jc"
    stream_maxlen: int = 10_000
    block_seconds: float = 4.0
    heartbeat_interval: float = 5.0
    liveness_interval: float = 30.0
    cancel_grace: float = 10.0
    source: str = "environment"

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_url"):
                value = redact_url(value)
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    __str__ = __repr__

    def redacted(self) -> dict[str, str]:
        """The URLs, safe to print."""
        return {
            "broker": redact_url(self.broker_url),
            "result backend": redact_url(self.result_url),
            "events": redact_url(self.events_url),
            "store": redact_url(self.store_url),
            "s3 endpoint": redact_url(self.s3_endpoint_url) or "(AWS)",
        }

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build the settings from ``env`` (default: ``os.environ``) and the connection file.

        >>> s = Settings.from_env({"JUPYTER_CELERY_BROKER_URL": "redis://:pw@localhost:6379/0",
        ...                        "JUPYTER_CELERY_STORE_URL": "file:///tmp/jc"})
        >>> s.events_url == s.broker_url, "pw" in repr(s)
        (True, False)
        """
        env = os.environ if env is None else env
        state_dir = default_state_dir(env)

        def get(name: str) -> str | None:
            return env.get(ENV_PREFIX + name) or None

        connection: dict[str, Any] | None = None
        source = "environment"
        broker = get("BROKER_URL")
        store = get("STORE_URL")
        if broker is None or store is None:
            connection = read_connection_file(state_dir)
            if connection is None and broker is None:
                raise ConfigurationError(
                    f"jupyter-celery is not configured: set {ENV_PREFIX}BROKER_URL, or start the "
                    f"embedded stack with `jupyter-celery up` (no connection file in {state_dir})"
                )
            if connection is not None:
                source = str(state_dir / CONNECTION_FILE)
                broker = broker or connection.get("broker_url")
                store = store or connection.get("store_url")
        if not broker:
            raise ConfigurationError(f"{ENV_PREFIX}BROKER_URL is not set")
        store = store or (state_dir / "store").as_uri()
        owner = get("OWNER") or env.get("JUPYTERHUB_USER") or getpass.getuser()
        endpoint = get("S3_ENDPOINT_URL")
        return cls(
            broker_url=_check_redis_url("BROKER_URL", broker),
            result_url=_check_redis_url("RESULT_URL", get("RESULT_URL") or broker),
            events_url=_check_redis_url("EVENTS_URL", get("EVENTS_URL") or broker),
            store_url=_check_store_url(store),
            s3_endpoint_url=_check_endpoint_url(endpoint) if endpoint else "",
            s3_part_size=_part_size(get("S3_PART_MB") or str(DEFAULT_S3_PART_MB)),
            frame_format=_choice("FRAME_FORMAT", get("FRAME_FORMAT") or "ipc", FRAME_FORMATS),
            inline_limit=_positive_int("INLINE_LIMIT", get("INLINE_LIMIT") or str(DEFAULT_INLINE_LIMIT)),
            owner=_check_owner(owner),
            state_dir=state_dir,
            job_ttl=_positive_int("JOB_TTL", get("JOB_TTL") or str(DEFAULT_JOB_TTL)),
            heartbeat_interval=_positive_float("HEARTBEAT_INTERVAL", get("HEARTBEAT_INTERVAL") or "5"),
            liveness_interval=_positive_float("LIVENESS_INTERVAL", get("LIVENESS_INTERVAL") or "30"),
            cancel_grace=_positive_float("CANCEL_GRACE", get("CANCEL_GRACE") or "10"),
            source=source,
        )

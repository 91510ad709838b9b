"""How values travel between the kernel and a worker, in both directions.

Each value becomes a small JSON document (an *encoded value*). Whatever the size of the value,
the document stays small: anything above the inline limit goes to the object store and the
document carries its key (claim check).

``{"enc": "json", "value": ...}``
    JSON-safe values (str, int, finite float, bool, None, and lists / str-keyed dicts of those),
    inline in the message when their JSON is at most the inline limit. Types round-trip exactly:
    a tuple is not JSON-safe here, because it would come back as a list.
``{"enc": "frame", "format": "ipc" | "parquet", "kind": "dataframe" | "series" | "table", ...}``
    a pandas DataFrame or Series, or a pyarrow Table, as Arrow data (:mod:`jupyter_celery.core.frames`):
    inline (``"data": "<base64>"``) when small, else ``"key"`` and ``"size"`` in the store. A frame
    that Arrow cannot hold exactly travels pickled instead, with a :class:`FramePickledWarning`.
``{"enc": "pickle", "data": "<base64>"}``
    anything else, serialised with cloudpickle (so functions, lambdas and classes defined in a
    notebook travel by value), inline when small;
``{"enc": "pickle", "key": "<store key>", "size": n}``
    the same, written to the object store when larger than the inline limit;
``{"enc": "dataset", "name": "<owner>/<name>", "key": "<store key>", "format": "parquet"}``
    an input that is a named dataset's reference (:class:`~jupyter_celery.core.datasets.DatasetRef`):
    the worker loads the dataset itself, the kernel never does;
``{"enc": "repr", "text": "..."}``
    only for a value that is shown, not bound (a cell's final expression that cannot be
    pickled): it decodes to a :class:`RemoteRepr` that displays the worker's ``repr``.

Store keys are content-addressed (:mod:`jupyter_celery.core.objects`): the same bytes are stored
once, and sending unchanged data again uploads nothing.

An encoding failure is an :class:`EncodingError` naming the variable; a decoding failure is a
:class:`DecodingError` naming it. When the store is at fault, the store's error is the
``__cause__`` of either.
"""

from __future__ import annotations

import base64
import json
import math
import pickle
import warnings
from typing import Any

import cloudpickle

from jupyter_celery.core.datasets import DatasetRef
from jupyter_celery.core.errors import (
    DecodingError,
    EncodingError,
    FramePickledWarning,
    JupyterCeleryError,
    ObjectMissing,
    StoreError,
)
from jupyter_celery.core.objects import Objects, ObjectTag
from jupyter_celery.core.store import Store

Encoded = dict[str, Any]
PICKLE_PROTOCOL = 5
_MAX_DEPTH = 64


def _json_safe(value: Any, depth: int = 0) -> bool:
    kind = type(value)
    if kind in (str, int, bool) or value is None:
        return True
    if kind is float:
        return math.isfinite(value)
    if depth > _MAX_DEPTH:
        return False
    if kind is list:
        return all(_json_safe(v, depth + 1) for v in value)
    if kind is dict:
        return all(type(k) is str and _json_safe(v, depth + 1) for k, v in value.items())
    return False


def _frame_kind(value: Any) -> str | None:
    """The frame kind of ``value``, without importing pandas or pyarrow for values that are neither."""
    if type(value).__module__.partition(".")[0] not in ("pandas", "pyarrow"):  # DataFrame's is just "pandas"
        return None
    from jupyter_celery.core import frames

    return frames.kind_of(value)


class RemoteRepr:
    """Stands for a value that stayed on the worker: it shows the worker's ``repr`` of it."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


class Codec:
    """Encodes and decodes values, writing large ones to ``store`` (content-addressed, see the module doc).

    ``frame_format`` is how DataFrames of jobs are stored: ``ipc`` (Arrow IPC) or ``parquet``.
    """

    def __init__(self, store: Store, inline_limit: int, frame_format: str = "ipc") -> None:
        self.store = store
        self.inline_limit = inline_limit
        self.frame_format = frame_format
        self.objects = Objects(store)

    def encode(self, name: str, value: Any, tag: ObjectTag) -> Encoded:
        """Encode ``value`` (the variable ``name``); large values are written to the store, tagged with ``tag``.

        A :class:`DatasetRef` given as an input (``tag.role == "input"``) travels as the reference;
        the worker loads the dataset.
        """
        try:
            if tag.role == "input" and isinstance(value, DatasetRef):
                return {"enc": "dataset", "name": value.qualified_name, "key": value.key, "format": "parquet"}
            kind = _frame_kind(value)
            if kind is not None:
                encoded = self._encode_frame(name, value, kind, tag)
                if encoded is not None:
                    return encoded
            if _json_safe(value):
                text = json.dumps(value, ensure_ascii=False, allow_nan=False)
                if len(text.encode()) <= self.inline_limit:
                    return {"enc": "json", "value": value}
            try:
                data = cloudpickle.dumps(value, protocol=PICKLE_PROTOCOL)
            except Exception as exc:  # pickling raises many types: TypeError, PicklingError, ...
                raise EncodingError(name, f"{type(value).__name__} cannot be pickled ({exc})") from exc
            if len(data) <= self.inline_limit:
                return {"enc": "pickle", "data": base64.b64encode(data).decode("ascii")}
            stored = self.objects.put_bytes(data, "pkl", tag)
            return {"enc": "pickle", "key": stored.key, "size": stored.size}
        except EncodingError:
            raise
        except JupyterCeleryError as exc:
            raise EncodingError(name, str(exc)) from exc

    def _encode_frame(self, name: str, value: Any, kind: str, tag: ObjectTag) -> Encoded | None:
        from jupyter_celery.core import frames

        fmt = self.frame_format
        try:
            table = frames.to_table(value, fmt)
        except frames.NotArrow as exc:
            if value.num_rows if kind == "table" else value.size:  # no warning for a frame without data
                warnings.warn(
                    FramePickledWarning(f"{kind} {name!r} travels pickled, not as Arrow {fmt}: {exc.reason}"),
                    stacklevel=4,
                )
            return None
        encoded: Encoded = {"enc": "frame", "format": fmt, "kind": kind}
        ext = frames.EXTENSIONS[fmt]
        if table.nbytes <= self.inline_limit:
            data = frames.to_bytes(table, fmt)
            if len(data) <= self.inline_limit:
                return {**encoded, "data": base64.b64encode(data).decode("ascii")}
            stored = self.objects.put_bytes(data, ext, tag)
        else:  # serialised into a staging file, never into memory: a frame of any size costs no extra copy
            digest = frames.digest(table)
            found = self.objects.find(tag.owner, digest, ext) if digest else None
            if found is not None:  # the store has it: nothing to serialise, nothing to upload
                return {**encoded, "key": found.key, "size": found.size}
            with self.store.staging("." + ext) as path:
                frames.write(table, fmt, str(path))
                stored = self.objects.put_staged(path, ext, tag, digest)
        return {**encoded, "key": stored.key, "size": stored.size}

    def decode(self, name: str, encoded: Encoded) -> Any:
        """The value of an encoded variable."""
        enc = encoded.get("enc")
        if enc == "json":
            return encoded["value"]
        if enc == "repr":
            return RemoteRepr(str(encoded.get("text", "")))
        if enc not in ("pickle", "frame", "dataset"):
            raise DecodingError(name, f"unknown encoding {enc!r}")
        try:
            data = self.store.read(encoded["key"]) if "key" in encoded else bytearray(base64.b64decode(encoded["data"]))
        except StoreError as exc:
            if enc == "dataset" and isinstance(exc, ObjectMissing):
                raise DecodingError(
                    name, f"dataset {encoded.get('name')!r} is no longer in store {self.store.describe()}"
                ) from exc
            raise DecodingError(name, str(exc)) from exc
        try:
            if enc == "pickle":
                return pickle.loads(data)
            from jupyter_celery.core import frames

            return frames.load(data, str(encoded.get("format", "parquet")))
        except Exception as exc:
            raise DecodingError(name, f"{type(exc).__name__}: {exc}") from exc

    @staticmethod
    def in_store(encoded: Encoded) -> bool:
        """Whether decoding ``encoded`` reads the store (else it is inline)."""
        return "key" in encoded

    @staticmethod
    def keys_of(encoded: Encoded) -> list[str]:
        """The job objects an encoded value refers to (a dataset is not a job object)."""
        return [encoded["key"]] if "key" in encoded and encoded.get("enc") != "dataset" else []

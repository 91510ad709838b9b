"""How values travel between the kernel and a worker, in both directions.

Each value becomes a small JSON document (an *encoded value*):

``{"enc": "json", "value": ...}``
    JSON-safe values (str, int, finite float, bool, None, and lists / str-keyed dicts of those),
    inline in the message when their JSON is at most the inline limit. Types round-trip exactly:
    a tuple is not JSON-safe here, because it would come back as a list.
``{"enc": "pickle", "data": "<base64>"}``
    anything else, serialised with cloudpickle (so functions, lambdas and classes defined in a
    notebook travel by value), inline when small;
``{"enc": "pickle", "key": "<store key>", "size": n}``
    the same, written to the object store when larger than the inline limit (claim check);
``{"enc": "repr", "text": "..."}``
    only for a value that is shown, not bound (a cell's final expression that cannot be
    pickled): it decodes to a :class:`RemoteRepr` that displays the worker's ``repr``.

An encoding failure is an :class:`EncodingError` naming the variable; a decoding failure is a
:class:`DecodingError` naming it.
"""

from __future__ import annotations

import base64
import json
import math
import pickle
from typing import Any

import cloudpickle

from jupyter_celery.core.errors import DecodingError, EncodingError, JupyterCeleryError
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


class RemoteRepr:
    """Stands for a value that stayed on the worker: it shows the worker's ``repr`` of it."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


class Codec:
    """Encodes and decodes values, writing large ones to ``store`` under ``key_prefix``."""

    def __init__(self, store: Store, inline_limit: int) -> None:
        self.store = store
        self.inline_limit = inline_limit

    def encode(self, name: str, value: Any, key_prefix: str) -> Encoded:
        """Encode ``value`` (the variable ``name``); large values are written to the store."""
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
        key = f"{key_prefix}/{name}.pkl"
        try:
            self.store.put(key, data)
        except JupyterCeleryError as exc:
            raise EncodingError(name, str(exc)) from exc
        return {"enc": "pickle", "key": key, "size": len(data)}

    def decode(self, name: str, encoded: Encoded) -> Any:
        """The value of an encoded variable."""
        enc = encoded.get("enc")
        if enc == "json":
            return encoded["value"]
        if enc == "pickle":
            try:
                data = self.store.get(encoded["key"]) if "key" in encoded else base64.b64decode(encoded["data"])
            except JupyterCeleryError as exc:
                raise DecodingError(name, str(exc)) from exc
            try:
                return pickle.loads(data)
            except Exception as exc:
                raise DecodingError(name, f"{type(exc).__name__}: {exc}") from exc
        if enc == "repr":
            return RemoteRepr(str(encoded.get("text", "")))
        raise DecodingError(name, f"unknown encoding {enc!r}")

    def keys_of(self, encoded: Encoded) -> list[str]:
        """The store keys an encoded value refers to."""
        return [encoded["key"]] if "key" in encoded else []

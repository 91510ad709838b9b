"""pandas DataFrames and Series and pyarrow Tables as Arrow data (IPC or Parquet), exactly.

**Exact.** pyarrow keeps a frame's index (RangeIndex as metadata, other indexes and MultiIndex
as columns), column index names, categoricals, tz-aware datetimes, timedeltas, nullable
integers/booleans and pandas' string dtypes in the file's ``pandas`` metadata. What it cannot hold
exactly is refused (:class:`NotArrow`, and the codec pickles the value with a warning):
duplicate column names, object columns of mixed Python values (object columns of only ``str``,
``bytes`` or ``datetime.date`` are fine), complex or sparse data, and anything a zero-row
probe shows coming back different (a column index whose labels mix types, an object index
level...). Dtype differences that a cast repairs exactly (``string[python]`` storage, Parquet's
``datetime64[s]`` read back as ``[ms]``, Parquet's non-string categoricals) are repaired on load
with the original dtypes, recorded in the file's ``jupyter_celery`` metadata, and so is a
DatetimeIndex's frequency. One thing does not survive: the sign and payload bits of a NaN in a
float column (pyarrow stores NaN as null, and restores the canonical NaN).

**Zero-copy loading.** A file is read from one writable buffer (:meth:`Store.read`), converted with
``to_pandas(split_blocks=True, self_destruct=True)``, and the arrays pyarrow hands out read-only
(numbers, datetimes, categorical codes without nulls) are replaced by writable views of the same
memory: loading a frame costs no second copy and the frame can be modified in place. Such a frame
has one pandas block per column.
"""

from __future__ import annotations

import base64
import json
import pickle
import struct
import warnings
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from jupyter_celery.core.store import ObjectBuffer

FORMATS = ("ipc", "parquet")
EXTENSIONS = {"ipc": "arrow", "parquet": "parquet"}
META_KEY = b"jupyter_celery"
SERIES_COLUMN = "value"  # the column of a stored Series whose name is not a string
ARROW_SAFE_OBJECTS = frozenset({"string", "bytes", "date", "empty"})  # infer_dtype kinds that come back exact


class NotArrow(Exception):
    """The value cannot travel as Arrow exactly; ``reason`` says why (the codec pickles it instead)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def kind_of(value: Any) -> str | None:
    """``dataframe``, ``series`` or ``table`` for exactly those types (not subclasses), else None."""
    if type(value) is pd.DataFrame:
        return "dataframe"
    if type(value) is pd.Series:
        return "series"
    if type(value) is pa.Table:
        return "table"
    return None


def to_table(value: Any, fmt: str) -> pa.Table:
    """``value`` (see :func:`kind_of`) as a Table that :func:`load` turns back into an identical value."""
    kind = kind_of(value)
    if kind is None:
        raise NotArrow(f"{type(value).__name__} is not a DataFrame, Series or pyarrow Table")
    if kind == "table":
        table = _with_extra(value, kind, {"schema_metadata": value.schema.metadata is not None})
        if layout_difference(value.slice(0, 0), _probe(table, fmt)):
            raise NotArrow(f"its schema would not come back identical from {fmt}")
        return table
    frame = value
    extra: dict[str, Any] = {}
    if kind == "series":
        extra["name"] = value.name
        frame = value.to_frame(name=value.name if isinstance(value.name, str) else SERIES_COLUMN)
    repairs = _object_repairs(frame)
    freq = getattr(frame.index, "freq", None)  # Arrow keeps no index frequency
    if freq is not None and isinstance(frame.index, (pd.DatetimeIndex, pd.TimedeltaIndex)):
        extra["freq"] = freq
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "column names of mixed type": the probe tells
            plain = pa.Table.from_pandas(frame, preserve_index=None)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise NotArrow(f"Arrow cannot hold it ({str(exc).splitlines()[0]})") from None
    sample = value.iloc[:0]
    for attempt in range(2):
        table = _with_extra(plain, kind, {**extra, **repairs})
        back = _probe(table, fmt)
        difference = layout_difference(sample, back)
        if difference is None:
            return table
        if attempt == 0:  # dtypes a cast brings back exactly: string storage, Parquet's time units and categoricals
            back_frame = back.to_frame() if kind == "series" else back
            columns = repairs.setdefault("columns", {})
            for i, (want, got) in enumerate(zip(frame.dtypes, back_frame.dtypes, strict=True)):
                if want != got or str(want) != str(got):
                    columns[i] = want
            if frame.index.nlevels == 1 and str(frame.index.dtype) != str(back_frame.index.dtype):
                repairs["index"] = frame.index.dtype
    raise NotArrow(f"it would not come back identical from {fmt}: {difference}")


def _object_repairs(frame: pd.DataFrame) -> dict[str, Any]:
    """Refuse columns Arrow cannot hold exactly; the object columns of strings to restore as object."""
    if not frame.columns.is_unique:
        duplicated = sorted({repr(c) for c in frame.columns[frame.columns.duplicated()]})
        raise NotArrow(f"duplicate column names ({', '.join(duplicated)})")
    repairs: dict[int, Any] = {}
    for i, dtype in enumerate(frame.dtypes):
        if not (isinstance(dtype, np.dtype) and dtype.kind == "O"):
            continue
        kind = pd.api.types.infer_dtype(frame.iloc[:, i], skipna=False)
        if kind not in ARROW_SAFE_OBJECTS:
            raise NotArrow(f"column {frame.columns[i]!r} holds {kind} Python objects")
        if kind == "string":
            repairs[i] = np.dtype(object)  # Arrow strings come back as pandas' str dtype
    for level in range(frame.index.nlevels):
        values = frame.index.get_level_values(level)
        if values.dtype == object and pd.api.types.infer_dtype(values, skipna=False) not in ARROW_SAFE_OBJECTS:
            raise NotArrow(f"index level {level} holds mixed Python objects")
    return {"columns": repairs} if repairs else {}


def _with_extra(table: pa.Table, kind: str, extra: dict[str, Any]) -> pa.Table:
    """``table`` with our metadata: the kind of value, and (pickled) what restores it exactly."""
    meta: dict[str, Any] = {"kind": kind}
    if extra:
        meta["pickled"] = base64.b64encode(pickle.dumps(extra, protocol=5)).decode("ascii")
    return table.replace_schema_metadata({**(table.schema.metadata or {}), META_KEY: json.dumps(meta).encode()})


def _probe(table: pa.Table, fmt: str) -> Any:
    """The zero-row slice of ``table`` through the whole write and load path."""
    sample = table.slice(0, 0)
    metadata = dict(sample.schema.metadata or {})
    if b"pandas" in metadata:  # a stored RangeIndex must have the sample's length, or pyarrow drops it
        pandas_meta = json.loads(metadata[b"pandas"])
        for index in pandas_meta.get("index_columns", []):
            if isinstance(index, dict) and index.get("kind") == "range":
                index["stop"] = index["start"]
        metadata[b"pandas"] = json.dumps(pandas_meta).encode()
        sample = sample.replace_schema_metadata(metadata)
    return load(bytearray(to_bytes(sample, fmt)), fmt)


def layout_difference(a: Any, b: Any) -> str | None:  # noqa: PLR0911, PLR0912 - one check per aspect
    """How two values differ in type, dtypes, names and index layout (not in data), or None."""
    if type(a) is not type(b):
        return f"{type(a).__name__} comes back as {type(b).__name__}"
    if isinstance(a, pa.Table):
        return None if a.schema.equals(b.schema, check_metadata=True) else "its schema changes"
    if isinstance(a, pd.Series):
        if a.dtype != b.dtype:
            return f"dtype {a.dtype} comes back as {b.dtype}"
        if type(a.name) is not type(b.name) or a.name != b.name:
            return f"name {a.name!r} comes back as {b.name!r}"
    else:
        if type(a.columns) is not type(b.columns) or a.columns.dtype != b.columns.dtype:
            return f"its column index {type(a.columns).__name__}[{a.columns.dtype}] changes"
        if not a.columns.equals(b.columns) or list(a.columns.names) != list(b.columns.names):
            return "its column labels change"
        for i, (x, y) in enumerate(zip(a.dtypes, b.dtypes, strict=True)):
            if x != y or str(x) != str(y):
                return f"column {a.columns[i]!r} of dtype {x} comes back as {y}"
    ia, ib = a.index, b.index
    if type(ia) is not type(ib) or list(ia.names) != list(ib.names):
        return f"its index {type(ia).__name__} comes back as {type(ib).__name__}"
    da = ia.dtypes if isinstance(ia, pd.MultiIndex) else pd.Series([ia.dtype])
    db = ib.dtypes if isinstance(ib, pd.MultiIndex) else pd.Series([ib.dtype])
    if [str(x) for x in da] != [str(y) for y in db]:
        return "its index dtypes change"
    if a.attrs != b.attrs:
        return "its attrs change"
    return None


DIGEST_VERSION = b"jupyter-celery arrow digest 1"


def digest(table: pa.Table) -> str | None:
    """The xxh3-128 digest of ``table``'s Arrow data: schema (with metadata), then each column's chunks with
    their offsets, lengths, null counts and every buffer. None when a column is nested (lists, structs...),
    whose children's offsets the flat buffer list does not show: such a table is hashed once serialised.

    The same data gives the same digest without serialising it: a value the store already holds
    costs one look-up, not a serialisation. Buffers that differ without changing the data (the values
    under nulls, slack) give another digest: a missed de-duplication, never a wrong object.
    """
    if not all(_flat(field.type) for field in table.schema):
        return None
    hasher = xxhash.xxh3_128(DIGEST_VERSION)
    hasher.update(table.schema.serialize())
    hasher.update(struct.pack("<q", table.num_rows))
    for column in table.columns:
        # the same data in other chunks (a frame read back from Parquet's row groups) gets the same digest;
        # combining copies, but only columns in several chunks
        _hash_array(hasher, column.chunk(0) if column.num_chunks == 1 else column.combine_chunks())
    return str(hasher.hexdigest())


def _flat(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        return _flat(kind.value_type)
    if isinstance(kind, pa.ExtensionType):
        return _flat(kind.storage_type)
    return not pa.types.is_nested(kind)


def _hash_array(hasher: Any, array: pa.Array) -> None:
    hasher.update(struct.pack("<qqq", array.offset, len(array), array.null_count))
    buffers = array.buffers()
    if array.null_count == 0 and buffers:
        buffers = [None, *buffers[1:]]  # a validity bitmap without nulls says nothing (and may or may not exist)
    for buf in buffers:
        if buf is None:
            hasher.update(struct.pack("<q", -1))
        else:
            hasher.update(struct.pack("<q", buf.size))
            hasher.update(buf)
    if isinstance(array, pa.DictionaryArray):
        _hash_array(hasher, array.dictionary)


def write(table: pa.Table, fmt: str, path: str) -> None:
    """Write ``table`` to the file at ``path`` (Arrow IPC file format, or Parquet with snappy)."""
    if fmt == "ipc":
        with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
    else:
        pq.write_table(table, path)


def to_bytes(table: pa.Table, fmt: str) -> bytes:
    """``table`` serialised in memory (for small values)."""
    sink = pa.BufferOutputStream()
    if fmt == "ipc":
        with pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
    else:
        pq.write_table(table, sink)
    data: bytes = sink.getvalue().to_pybytes()
    return data


def load(buffer: ObjectBuffer, fmt: str) -> Any:
    """The DataFrame, Series or Table stored in ``buffer`` (a file in ``fmt``), without copying its data.

    A Parquet or IPC file written by another tool loads as a DataFrame.
    """
    source = pa.BufferReader(pa.py_buffer(buffer))
    table = pa.ipc.open_file(source).read_all() if fmt == "ipc" else pq.read_table(source)
    metadata = dict(table.schema.metadata or {})
    meta = json.loads(metadata.pop(META_KEY, b"{}"))
    extra: dict[str, Any] = pickle.loads(base64.b64decode(meta["pickled"])) if "pickled" in meta else {}
    kind = meta.get("kind", "dataframe")
    if kind == "table":
        keep = metadata if (metadata or extra.get("schema_metadata", True)) else None
        return table.replace_schema_metadata(keep)
    owners = _owners(table, buffer)
    frame = _writable(table.to_pandas(split_blocks=True, self_destruct=True), owners)
    del table
    for i, dtype in extra.get("columns", {}).items():
        frame.isetitem(i, frame.iloc[:, i].astype(dtype))
    if "index" in extra:
        frame.index = frame.index.astype(extra["index"])
    if "freq" in extra:
        frame.index = type(frame.index)(frame.index, freq=extra["freq"])
    if kind == "series":
        series = frame.iloc[:, 0]
        series.name = extra.get("name")
        return series
    return frame


def _owners(table: pa.Table, buffer: ObjectBuffer) -> list[tuple[int, int, Any]]:
    """Writable memory the table's buffers may live in: the file's buffer, and mutable Arrow buffers."""
    owners: list[tuple[int, int, Any]] = []
    if len(buffer):
        owners.append((np.frombuffer(buffer, dtype=np.uint8).ctypes.data, len(buffer), buffer))
    for column in table.columns:
        for chunk in column.chunks:
            for buf in chunk.buffers():
                if buf is not None and buf.is_mutable and buf.size:
                    owners.append((buf.address, buf.size, buf))
    return owners


def _writable(frame: pd.DataFrame, owners: list[tuple[int, int, Any]]) -> pd.DataFrame:
    """``frame`` with every read-only array replaced by a writable view of the memory it is in."""
    arrays: list[Any] = []
    changed = False
    for i in range(frame.shape[1]):
        array = frame.iloc[:, i].array
        backing = getattr(array, "_ndarray", None)  # numpy-backed arrays: numbers, datetimes, categorical codes
        if isinstance(backing, np.ndarray) and not backing.flags.writeable:
            view = _view(backing, owners)
            array = array._from_backing_data(view) if view is not None else array.copy()
            changed = True
        arrays.append(array)
    if not changed:
        return frame
    rebuilt = pd.DataFrame(dict(enumerate(arrays)), index=frame.index, copy=False)
    rebuilt.columns = frame.columns
    rebuilt.attrs = frame.attrs
    return rebuilt


def _view(array: np.ndarray, owners: list[tuple[int, int, Any]]) -> np.ndarray | None:
    if array.ndim != 1 or not array.flags.c_contiguous:
        return None
    address = array.ctypes.data
    for start, size, owner in owners:
        if start <= address and address + array.nbytes <= start + size:
            return np.frombuffer(owner, dtype=array.dtype, count=array.size, offset=address - start)
    return None

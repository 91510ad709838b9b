"""Named datasets: DataFrames kept in the store under a name, for other notebooks and jobs.

A dataset is one Parquet file at ``<owner>/datasets/<name>.parquet`` (readable straight from the
bucket by DuckDB, Spark, pandas...), carrying its shape, kind and digest in its metadata. Storing
unchanged data under the same name again uploads nothing. ``jupyter-celery gc`` never deletes
a dataset. Another owner's dataset is read as ``"owner/name"``.

A :class:`DatasetRef` given to a ``%%celery`` cell as an input (``-i ref``) travels as the reference:
the worker loads the DataFrame, the notebook kernel never does. A job reads the dataset's current
version when it first uses it.

Datasets are Parquet so that other tools can read them: a value Parquet cannot hold exactly (see
:mod:`jupyter_celery.core.frames`: duplicate column names, mixed-object columns...) is refused with
a :class:`DatasetError` saying why, rather than stored pickled.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jupyter_celery.core.errors import DatasetError, DatasetMissing
from jupyter_celery.core.objects import ObjectTag, digest_file
from jupyter_celery.core.protocol import DATASET_METADATA, StoreKeys, check_dataset_name
from jupyter_celery.core.store import ObjectInfo, Store


def human_size(size: float) -> str:
    """``1536`` -> ``1.5 KB`` (powers of 1000, as disks and buckets report sizes)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(size) < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


@dataclass(frozen=True)
class DatasetRef:
    """A named dataset in the store. Pass it to ``%%celery -i ref`` to load the data on the worker."""

    name: str
    owner: str
    key: str
    size: int = 0
    rows: int = 0
    columns: int = 0
    kind: str = "dataframe"
    created: float = 0.0
    digest: str = ""

    @property
    def qualified_name(self) -> str:
        """``owner/name``: how any owner names this dataset."""
        return f"{self.owner}/{self.name}"

    def __repr__(self) -> str:
        return (
            f"<dataset {self.qualified_name}: {self.kind}, {self.rows:,} rows x {self.columns} columns, "
            f"{human_size(self.size)}>"
        )

    @classmethod
    def from_info(cls, info: ObjectInfo, owner: str, name: str) -> DatasetRef:
        meta = info.metadata

        def number(field: str) -> int:
            try:
                return int(meta.get(field, 0))
            except ValueError:
                return 0

        return cls(
            name=name,
            owner=owner,
            key=info.key,
            size=info.size,
            rows=number("rows"),
            columns=number("columns"),
            kind=str(meta.get("kind", "dataframe")),
            created=float(meta.get("created") or info.modified),
            digest=str(meta.get("digest", "")),
        )


class DatasetList(list[DatasetRef]):
    """The datasets of an owner; shown as a table in a notebook."""

    HEADERS = ("name", "kind", "rows", "columns", "size", "created")

    def _rows(self) -> list[tuple[str, ...]]:
        return [
            (d.name, d.kind, f"{d.rows:,}", str(d.columns), human_size(d.size),
             datetime.fromtimestamp(d.created).strftime("%Y-%m-%d %H:%M"))
            for d in self
        ]  # fmt: skip

    def __repr__(self) -> str:
        if not self:
            return "(no datasets)"
        rows = [self.HEADERS, *self._rows()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(self.HEADERS))]
        return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)

    def _repr_html_(self) -> str:
        if not self:
            return "<p><em>no datasets</em></p>"
        head = "".join(f"<th>{h}</th>" for h in self.HEADERS)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in self._rows())
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _shape(value: Any, kind: str) -> tuple[int, int]:
    if kind == "table":
        return int(value.num_rows), int(value.num_columns)
    if kind == "series":
        return len(value), 1
    return int(value.shape[0]), int(value.shape[1])


class Catalog:
    """The named datasets of ``owner`` in ``store``."""

    def __init__(self, store: Store, owner: str) -> None:
        self.store = store
        self.owner = owner

    def _locate(self, name: str) -> tuple[str, str]:
        owner, _, bare = name.rpartition("/")
        try:
            check_dataset_name(bare)
        except ValueError as exc:
            raise DatasetError(str(exc)) from None
        return owner or self.owner, bare

    def put(self, value: Any, name: str) -> DatasetRef:
        """Store ``value`` (a DataFrame, Series or pyarrow Table) as Parquet under ``name``, replacing any."""
        from jupyter_celery.core import frames

        owner, name = self._locate(name)
        if owner != self.owner:
            raise DatasetError(f"cannot write dataset {name!r} of owner {owner!r}: only your own ({self.owner!r})")
        kind = frames.kind_of(value)
        if kind is None:
            raise DatasetError(f"a dataset holds a DataFrame, Series or pyarrow Table, not {type(value).__name__}")
        try:
            table = frames.to_table(value, "parquet")
        except frames.NotArrow as exc:
            raise DatasetError(f"dataset {name!r} cannot be stored as Parquet exactly: {exc.reason}") from None
        key = StoreKeys.dataset(owner, name)
        rows, columns = _shape(value, kind)
        digest = frames.digest(table)
        existing = self.store.stat(key)
        if digest and existing is not None and existing.metadata.get("digest") == digest:
            return DatasetRef.from_info(existing, owner, name)  # unchanged: nothing serialised or uploaded
        with self.store.staging(".parquet") as path:
            frames.write(table, "parquet", str(path))
            digest = digest or digest_file(path)
            if existing is not None and existing.metadata.get("digest") == digest:
                return DatasetRef.from_info(existing, owner, name)
            shape = dict(zip(DATASET_METADATA, (str(rows), str(columns), kind, digest), strict=True))
            metadata = {**ObjectTag(owner, role="dataset").metadata(), **shape}
            size = path.stat().st_size
            self.store.put_file(key, path, metadata)
        return DatasetRef(name, owner, key, size, rows, columns, kind, float(metadata["created"]), digest)

    def ref(self, name: str) -> DatasetRef:
        """The reference of dataset ``name`` (``"owner/name"`` for another owner's), without loading it."""
        owner, bare = self._locate(name)
        info = self.store.stat(StoreKeys.dataset(owner, bare))
        if info is None:
            raise DatasetMissing(
                f"no dataset {bare!r} of owner {owner!r} in store {self.store.describe()}; datasets() lists them"
            )
        return DatasetRef.from_info(info, owner, bare)

    def get(self, name: str) -> Any:
        """The DataFrame (Series, Table) stored as ``name``."""
        from jupyter_celery.core import frames

        ref = self.ref(name)
        return frames.load(self.store.read(ref.key), "parquet")

    def list(self, owner: str | None = None) -> DatasetList:
        """The datasets of ``owner`` (default: yours), by name."""
        owner = owner or self.owner
        found = DatasetList()
        for info in self.store.objects(StoreKeys.datasets_prefix(owner)):
            name = StoreKeys.dataset_name(info.key)
            full = self.store.stat(info.key) if name is not None else None  # listings carry no metadata
            if name is not None and full is not None:
                found.append(DatasetRef.from_info(full, owner, name))
        found.sort(key=lambda d: d.name)
        return found

    def delete(self, name: str) -> None:
        """Remove your dataset ``name``."""
        owner, bare = self._locate(name)
        if owner != self.owner:
            raise DatasetError(f"cannot delete dataset {bare!r} of owner {owner!r}: only your own ({self.owner!r})")
        self.ref(name)  # a clear error when there is no such dataset
        self.store.delete(StoreKeys.dataset(owner, bare))

"""Named datasets from a notebook: ``put``, ``get``, ``datasets`` (also importable from ``jupyter_celery``).

::

    from jupyter_celery import put, get, datasets

    ref = put(sales, name="sales-2026")    # Parquet in the store, readable by other tools too
    datasets()                             # a table of your datasets
    same = get("sales-2026")               # back in this notebook (another owner's: "ada/sales-2026")

    %%celery -i ref                        # the worker loads the data; this kernel never does
    summary = ref.groupby("region").sum()

They use the stack's store and owner (the same settings as ``%%celery``). See
:mod:`jupyter_celery.core.datasets` for what is stored and how.
"""

from __future__ import annotations

from typing import Any

from jupyter_celery.core.datasets import DatasetList, DatasetRef
from jupyter_celery.kernel.client import get_client

__all__ = ["DatasetList", "DatasetRef", "datasets", "delete_dataset", "get", "put"]


def put(value: Any, *, name: str) -> DatasetRef:
    """Store ``value`` (a DataFrame, Series or pyarrow Table) as the dataset ``name``, replacing any.

    Unchanged data is not uploaded again. Returns the dataset's reference: pass it to a
    ``%%celery -i ref`` cell to have the worker load it.
    """
    return get_client().catalog.put(value, name)


def get(name: str) -> Any:
    """The DataFrame (Series, Table) stored as ``name``; ``"owner/name"`` reads another owner's."""
    return get_client().catalog.get(name)


def datasets(owner: str | None = None) -> DatasetList:
    """Your datasets (or ``owner``'s), shown as a table in a notebook."""
    return get_client().catalog.list(owner)


def delete_dataset(name: str) -> None:
    """Delete your dataset ``name`` (``jupyter-celery gc`` never does)."""
    get_client().catalog.delete(name)

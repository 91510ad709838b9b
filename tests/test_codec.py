"""The value codec: inline values, the claim check, content-addressed keys, frames, datasets."""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pandas as pd
import pytest

from jupyter_celery.core.codec import Codec, RemoteRepr
from jupyter_celery.core.datasets import Catalog
from jupyter_celery.core.errors import DecodingError, EncodingError, FramePickledWarning, StoreError
from jupyter_celery.core.objects import ObjectTag
from jupyter_celery.core.store import LocalStore, open_store

TAG = ObjectTag("ada", "job1", "input")


@pytest.fixture
def store(tmp_path):
    return open_store((tmp_path / "store").as_uri())


def test_inline_json_inline_pickle_and_store(store):
    codec = Codec(store, inline_limit=1000)
    assert codec.encode("a", {"k": [1, 2.5, None]}, TAG) == {"enc": "json", "value": {"k": [1, 2.5, None]}}
    small = codec.encode("t", (1, 2), TAG)
    assert small["enc"] == "pickle"
    assert "data" in small
    large = codec.encode("big", "x" * 5000, TAG)
    assert large["enc"] == "pickle"
    assert large["key"].startswith("ada/objects/")
    assert large["key"].endswith(".pkl")
    assert codec.decode("big", large) == "x" * 5000
    assert codec.decode("t", small) == (1, 2)
    assert codec.keys_of(large) == [large["key"]]
    assert codec.keys_of(small) == []


def test_keys_are_content_addressed_and_carry_job_and_time(store):
    codec = Codec(store, inline_limit=100)
    first = codec.encode("a", np.arange(1000), ObjectTag("ada", "job1", "input"))
    written = codec.objects.bytes_written
    again = codec.encode("renamed", np.arange(1000), ObjectTag("ada", "job2", "input"))
    assert again["key"] == first["key"]  # same bytes, same object
    assert codec.objects.bytes_written == written  # nothing uploaded the second time
    other = codec.encode("a", np.arange(1001), ObjectTag("ada", "job3", "input"))
    assert other["key"] != first["key"]
    info = store.stat(first["key"])
    assert info.metadata["job"] == "job1"  # the job that wrote it
    assert info.metadata["owner"] == "ada"
    assert float(info.metadata["created"]) > 0
    assert codec.encode("a", np.arange(1000), ObjectTag("bob", "job4"))["key"].startswith("bob/")


def test_frames_travel_as_arrow_inline_or_in_the_store(store):
    codec = Codec(store, inline_limit=4000)
    small = pd.DataFrame({"a": [1, 2], "s": ["x", "y"]})
    inline = codec.encode("small", small, TAG)
    assert inline["enc"] == "frame"
    assert inline["format"] == "ipc"
    assert "data" in inline
    big = pd.DataFrame({"a": np.arange(100_000)})
    stored = codec.encode("big", big, TAG)
    assert stored["key"].endswith(".arrow")
    pd.testing.assert_frame_equal(codec.decode("small", inline), small)
    pd.testing.assert_frame_equal(codec.decode("big", stored), big)
    parquet = Codec(store, inline_limit=4000, frame_format="parquet").encode("big", big, TAG)
    assert parquet["key"].endswith(".parquet")
    pd.testing.assert_frame_equal(codec.decode("big", parquet), big)


def test_a_frame_arrow_cannot_hold_exactly_travels_pickled_with_a_warning(store):
    codec = Codec(store, inline_limit=100)
    mixed = pd.DataFrame({"m": [1, "a", None, 2.5] * 100})
    with pytest.warns(FramePickledWarning, match=r"'mixed' travels pickled.*column 'm' holds mixed"):
        encoded = codec.encode("mixed", mixed, TAG)
    assert encoded["enc"] == "pickle"
    back = codec.decode("mixed", encoded)
    pd.testing.assert_frame_equal(back, mixed)
    assert [type(v) for v in back["m"][:4]] == [int, str, type(None), float]
    duplicated = pd.DataFrame([[1, 2]] * 100, columns=["a", "a"])
    with pytest.warns(FramePickledWarning, match=r"duplicate column names \('a'\)"):
        encoded = codec.encode("dup", duplicated, TAG)
    pd.testing.assert_frame_equal(codec.decode("dup", encoded), duplicated)  # preserved, pickled
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        empty = codec.decode("e", codec.encode("e", pd.DataFrame(), TAG))  # no warning for a frame without data
    pd.testing.assert_frame_equal(empty, pd.DataFrame())


def test_a_dataset_input_travels_as_its_reference(store):
    codec = Codec(store, inline_limit=100)
    frame = pd.DataFrame({"a": np.arange(1000)})
    ref = Catalog(store, "ada").put(frame, "sales")
    encoded = codec.encode("ref", ref, TAG)
    assert encoded == {"enc": "dataset", "name": "ada/sales", "key": "ada/datasets/sales.parquet", "format": "parquet"}
    assert codec.keys_of(encoded) == []  # datasets are not job objects
    pd.testing.assert_frame_equal(codec.decode("ref", encoded), frame)
    as_output = codec.encode("ref", ref, ObjectTag("ada", "job1", "output"))
    assert codec.decode("ref", as_output) == ref  # an output keeps the reference itself
    store.delete(ref.key)
    with pytest.raises(DecodingError, match=r"'ref'.*dataset 'ada/sales' is no longer in store"):
        codec.decode("ref", encoded)


def test_unencodable_variable_is_named(store):
    codec = Codec(store, inline_limit=1000)
    with pytest.raises(EncodingError, match="'lock'") as info:
        codec.encode("lock", threading.Lock(), TAG)
    assert info.value.name == "lock"


def test_store_failures_keep_the_store_error_as_cause(store, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    codec = Codec(LocalStore(blocker), inline_limit=10)
    with pytest.raises(EncodingError, match=r"'big'.*in store file://") as info:
        codec.encode("big", "x" * 100, TAG)
    assert isinstance(info.value.__cause__, StoreError)
    with pytest.raises(DecodingError, match=r"'gone'.*not in store.*expired") as missing:
        Codec(store, inline_limit=10).decode("gone", {"enc": "pickle", "key": "p/gone.pkl", "size": 1})
    assert isinstance(missing.value.__cause__, StoreError)


def test_repr_fallback():
    assert repr(Codec(None, 0).decode("v", {"enc": "repr", "text": "<Lock>"})) == "<Lock>"  # type: ignore[arg-type]
    assert isinstance(Codec(None, 0).decode("v", {"enc": "repr", "text": ""}), RemoteRepr)  # type: ignore[arg-type]

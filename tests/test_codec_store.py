"""The local store and the value codec, on a real directory."""

from __future__ import annotations

import os
import threading

import pytest

from jupyter_celery.core.codec import Codec, RemoteRepr
from jupyter_celery.core.errors import (
    ConfigurationError,
    DecodingError,
    EncodingError,
    ObjectMissing,
    StoreError,
)
from jupyter_celery.core.store import LocalStore, open_store


@pytest.fixture
def store(tmp_path):
    return open_store((tmp_path / "store").as_uri())


def test_put_get_exists_delete_keys(store):
    store.put("o/jobs/1/in/a.pkl", b"abc")
    assert store.get("o/jobs/1/in/a.pkl") == b"abc"
    assert store.exists("o/jobs/1/in/a.pkl")
    assert list(store.keys("o/jobs/")) == ["o/jobs/1/in/a.pkl"]
    store.delete("o/jobs/1/in/a.pkl")
    store.delete("o/jobs/1/in/a.pkl")  # idempotent
    assert not store.exists("o/jobs/1/in/a.pkl")


def test_missing_object_names_key_and_store(store):
    with pytest.raises(ObjectMissing, match=r"'nope' is not in store file://"):
        store.get("nope")


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "./a"])
def test_invalid_keys_are_refused(store, key):
    with pytest.raises(StoreError):
        store.put(key, b"x")


def test_writes_are_atomic(store):
    """A reader sees the old object or the whole new one, never a part."""
    big_a, big_b = b"a" * 5_000_000, b"b" * 5_000_000
    store.put("k", big_a)
    seen = set()
    stop = threading.Event()

    def read():
        while not stop.is_set():
            data = store.get("k")
            seen.add((data[:1], len(data)))

    reader = threading.Thread(target=read)
    reader.start()
    for _ in range(20):
        store.put("k", big_b)
        store.put("k", big_a)
    stop.set()
    reader.join()
    assert seen <= {(b"a", 5_000_000), (b"b", 5_000_000)}
    assert not [k for k in os.listdir(store.root) if k.endswith(".part")]


def test_unwritable_store_is_a_clear_error(tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with pytest.raises(StoreError, match=r"cannot write 'a/b' in store file://.*not-a-directory"):
        LocalStore(blocker).put("a/b", b"x")


def test_unsupported_store_url():
    with pytest.raises(ConfigurationError):
        open_store("gopher://x/y")


def test_codec_inline_json_inline_pickle_and_store(store):
    codec = Codec(store, inline_limit=1000)
    assert codec.encode("a", {"k": [1, 2.5, None]}, "p") == {"enc": "json", "value": {"k": [1, 2.5, None]}}
    small = codec.encode("t", (1, 2), "p")
    assert small["enc"] == "pickle" and "data" in small
    large = codec.encode("big", "x" * 5000, "p")
    assert large == {"enc": "pickle", "key": "p/big.pkl", "size": large["size"]}
    assert store.exists("p/big.pkl")
    assert codec.decode("big", large) == "x" * 5000
    assert codec.decode("t", small) == (1, 2)


def test_codec_names_the_unencodable_variable(store):
    codec = Codec(store, inline_limit=1000)
    with pytest.raises(EncodingError, match="'lock'") as info:
        codec.encode("lock", threading.Lock(), "p")
    assert info.value.name == "lock"


def test_codec_decoding_a_missing_object_names_the_variable(store):
    codec = Codec(store, inline_limit=10)
    with pytest.raises(DecodingError, match=r"'gone'.*not in store"):
        codec.decode("gone", {"enc": "pickle", "key": "p/gone.pkl", "size": 1})


def test_codec_repr_fallback():
    assert repr(Codec(None, 0).decode("v", {"enc": "repr", "text": "<Lock>"})) == "<Lock>"  # type: ignore[arg-type]
    assert isinstance(Codec(None, 0).decode("v", {"enc": "repr", "text": ""}), RemoteRepr)  # type: ignore[arg-type]

"""DataFrames, Series and pyarrow Tables through Arrow IPC and Parquet: exact round trips (hypothesis)."""

from __future__ import annotations

import datetime
import io

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jupyter_celery.core import frames

FORMATS = ["ipc", "parquet"]
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ZONES = ["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata"]


def round_trip(value, fmt):
    table = frames.to_table(value, fmt)
    return frames.load(bytearray(frames.to_bytes(table, fmt)), fmt), table


def assert_identical(back, value):
    if isinstance(value, pd.Series):
        pd.testing.assert_series_equal(back, value, check_exact=True, check_index_type=True, check_freq=True)
    else:
        pd.testing.assert_frame_equal(
            back, value, check_exact=True, check_column_type=True, check_index_type=True, check_freq=True,
            check_flags=True,
        )  # fmt: skip
    assert back.attrs == value.attrs


def assert_writable(frame):
    """Every column takes an in-place assignment (zero-copy loading must not leave read-only arrays)."""
    if len(frame) == 0:
        return
    for i in range(frame.shape[1]):
        before = frame.iloc[:, i].copy()
        frame.iloc[0, i] = frame.iloc[0, i]
        pd.testing.assert_series_equal(frame.iloc[:, i], before, check_exact=True)


def nullable(draw, values, allow):
    return [None if allow and draw(st.booleans()) and draw(st.booleans()) else v for v in values]


@st.composite
def column(draw, n):  # noqa: PLR0911, PLR0912 - one branch per dtype family
    kind = draw(st.sampled_from([
        "float64", "float32", "int64", "int8", "uint64", "bool", "datetime", "tz", "timedelta", "Int64", "UInt16",
        "boolean", "Float64", "str", "string[pyarrow]", "string[python]", "str[python]", "category", "category-int",
        "object-str", "object-bytes", "object-date", "period",
    ]))  # fmt: skip
    nulls = draw(st.booleans())
    if kind in ("float64", "float32"):
        return np.array(draw(st.lists(st.floats(width=int(kind[-2:])), min_size=n, max_size=n)), dtype=kind)
    if kind in ("int64", "int8", "uint64"):
        info = np.iinfo(kind)
        return np.array(draw(st.lists(st.integers(int(info.min), int(info.max)), min_size=n, max_size=n)), dtype=kind)
    if kind == "bool":
        return np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    if kind in ("datetime", "tz", "timedelta"):
        unit = draw(st.sampled_from(["s", "ms", "us", "ns"]))
        ints = draw(st.lists(st.integers(-(10**9), 10**9), min_size=n, max_size=n))
        if kind == "timedelta":
            values = np.array(ints, dtype=f"timedelta64[{unit}]")
            return pd.array(values if not nulls else np.where(np.arange(n) % 3 == 0, np.timedelta64("NaT"), values))
        values = np.array(ints, dtype=f"datetime64[{unit}]")
        if nulls:
            values = np.where(np.arange(n) % 3 == 0, np.datetime64("NaT"), values)
        series = pd.Series(values)
        return (
            series.dt.tz_localize("UTC").dt.tz_convert(draw(st.sampled_from(ZONES))).array if kind == "tz" else values
        )
    if kind in ("Int64", "UInt16"):
        top = 2**62 if kind == "Int64" else 2**16 - 1
        low = -top if kind == "Int64" else 0
        return pd.array(nullable(draw, draw(st.lists(st.integers(low, top), min_size=n, max_size=n)), nulls), kind)
    if kind == "boolean":
        return pd.array(nullable(draw, draw(st.lists(st.booleans(), min_size=n, max_size=n)), nulls), "boolean")
    if kind == "Float64":
        return pd.array(nullable(draw, draw(st.lists(st.floats(allow_nan=False), min_size=n, max_size=n)), nulls), kind)
    texts = draw(st.lists(st.text(max_size=8), min_size=n, max_size=n))
    if kind in ("str", "string[pyarrow]", "string[python]", "str[python]"):
        dtype = pd.StringDtype("python", na_value=np.nan) if kind == "str[python]" else kind
        return pd.array(nullable(draw, texts, nulls), dtype=dtype)
    if kind == "category":
        categories = sorted(set(texts) | set(draw(st.lists(st.text(max_size=3), max_size=3))))
        return pd.Categorical(nullable(draw, texts, nulls), categories=categories, ordered=draw(st.booleans()))
    if kind == "category-int":
        ints = draw(st.lists(st.integers(-5, 5), min_size=n, max_size=n))
        return pd.Categorical(nullable(draw, ints, nulls), categories=list(range(-5, 6)))
    if kind == "object-str":
        return pd.array(texts, dtype=object)
    if kind == "object-bytes":
        return pd.array([t.encode() for t in texts], dtype=object)
    if kind == "object-date":
        days = draw(st.lists(st.integers(0, 50_000), min_size=n, max_size=n))
        return pd.array([datetime.date(1970, 1, 1) + datetime.timedelta(d) for d in days], dtype=object)
    start = draw(st.integers(0, 1000))
    return (
        pd.period_range("2000-01", periods=n, freq="M")[::-1]
        if n and start % 2
        else pd.period_range("2000", periods=n, freq="D")
    )


@st.composite
def index(draw, n):  # noqa: PLR0911 - one branch per index kind
    name = draw(st.sampled_from([None, "idx", "a"]))
    kind = draw(st.sampled_from(["range", "int", "str", "datetime", "multi", "category", "float"]))
    if kind == "range":
        start, step = draw(st.integers(-100, 100)), draw(st.integers(1, 5)) * draw(st.sampled_from([1, -1]))
        return pd.RangeIndex(start, start + n * step, step, name=name)
    if kind == "int":
        return pd.Index(draw(st.lists(st.integers(-1000, 1000), min_size=n, max_size=n)), dtype="int64", name=name)
    if kind == "float":
        return pd.Index(draw(st.lists(st.floats(allow_nan=False), min_size=n, max_size=n)), dtype="float64", name=name)
    if kind == "str":
        return pd.Index(draw(st.lists(st.text(max_size=4), min_size=n, max_size=n)), dtype="str", name=name)
    if kind == "datetime":
        freq = draw(st.sampled_from(["D", "h", "15min"]))
        return pd.date_range("2024-03-30", periods=n, freq=freq, tz=draw(st.sampled_from([None, *ZONES])), name=name)
    if kind == "category":
        return pd.CategoricalIndex(draw(st.lists(st.sampled_from(["x", "y", "z"]), min_size=n, max_size=n)), name=name)
    level0 = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    level1 = draw(st.lists(st.sampled_from(["p", "q"]), min_size=n, max_size=n))
    return pd.MultiIndex.from_arrays([level0, pd.Index(level1, dtype="str")], names=[name, "second"])


@st.composite
def data_frames(draw):
    n = draw(st.integers(0, 12))
    width = draw(st.integers(0, 5))
    label_kind = draw(st.sampled_from(["str", "int", "multi"] if width else ["str"]))
    if label_kind == "str":
        labels = pd.Index([f"c{i}" for i in range(width)], dtype="str")
    elif label_kind == "int":
        labels = pd.Index(
            draw(st.lists(st.integers(-99, 99), min_size=width, max_size=width, unique=True)), dtype="int64"
        )
    else:
        labels = pd.MultiIndex.from_tuples([(f"g{i % 2}", f"c{i}") for i in range(width)])
    frame = pd.DataFrame({i: draw(column(n)) for i in range(width)}, index=draw(index(n)))
    frame.columns = labels if width else frame.columns
    if draw(st.booleans()) and width and label_kind != "multi":
        frame.columns.name = "fields"
    if draw(st.booleans()):
        frame.attrs["source"] = "hypothesis"
    return frame


@pytest.mark.parametrize("fmt", FORMATS)
@PROPERTY
@given(frame=data_frames())
def test_data_frames_round_trip_exactly(fmt, frame):
    try:
        back, _ = round_trip(frame, fmt)
    except frames.NotArrow:
        assert frame.shape[1] == 0  # only a frame without columns has no exact Arrow form (its column index)
        return
    assert_identical(back, frame)
    assert_writable(back)


@pytest.mark.parametrize("fmt", FORMATS)
@PROPERTY
@given(data=st.data())
def test_series_round_trip_exactly(fmt, data):
    n = data.draw(st.integers(0, 10))
    series = pd.Series(data.draw(column(n)), index=data.draw(index(n)))
    series.name = data.draw(st.sampled_from([None, "price", 7, ("a", 1)]))
    back, _ = round_trip(series, fmt)
    assert_identical(back, series)


@PROPERTY
@given(values=st.lists(st.one_of(st.integers(), st.text(max_size=3), st.none(), st.floats(), st.binary(max_size=3)),
                       min_size=1, max_size=8))  # fmt: skip
def test_object_columns_are_exact_or_refused(values):
    frame = pd.DataFrame({"o": pd.array(values, dtype=object)})
    for fmt in FORMATS:
        refused = None
        try:
            back, _ = round_trip(frame, fmt)
        except frames.NotArrow as exc:
            refused = exc.reason
        if refused is not None:
            assert "column 'o' holds" in refused
            continue
        assert_identical(back, frame)
        assert [type(v) for v in back["o"]] == [type(v) for v in frame["o"]]


@pytest.mark.parametrize("fmt", FORMATS)
def test_arrow_tables_round_trip_with_their_metadata(fmt):
    table = pa.table({"a": pa.array([1, None, 3], pa.int32()), "s": pa.array(["x", "y", None], pa.large_string())})
    back, _ = round_trip(table, fmt)
    assert back.equals(table)
    assert back.schema.metadata is None
    tagged = table.replace_schema_metadata({b"origin": b"sensor"})
    assert round_trip(tagged, fmt)[0].schema.metadata == {b"origin": b"sensor"}


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (pd.DataFrame([[1, 2]], columns=["a", "a"]), "duplicate column names ('a')"),
        (pd.DataFrame({"m": [1, "a"]}), "column 'm' holds mixed-integer Python objects"),
        (pd.DataFrame({"l": [[1], [2, 3]]}), "column 'l' holds mixed Python objects"),
        (pd.DataFrame({"c": [1 + 2j]}), "Arrow cannot hold it"),
        (pd.DataFrame({"a": [1], 2: [3]}), "column index"),
        (pd.DataFrame({"a": [1, 2]}, index=pd.Index([1, "b"], dtype=object)), "index level 0 holds mixed"),
    ],
    ids=["duplicate-names", "mixed", "lists", "complex", "mixed-labels", "mixed-index"],
)
def test_what_arrow_cannot_hold_exactly_is_refused_with_the_reason(frame, reason):
    for fmt in FORMATS:
        with pytest.raises(frames.NotArrow) as info:
            frames.to_table(frame, fmt)
        assert reason in info.value.reason


def test_other_tools_read_the_parquet(tmp_path):
    frame = pd.DataFrame(
        {
            "when": pd.date_range("2024", periods=3, tz="UTC"),
            "n": pd.array([1, None, 3], "Int64"),
            "s": ["a", "b", None],
        },
        index=pd.Index(["x", "y", "z"], name="key"),
    )
    data = frames.to_bytes(frames.to_table(frame, "parquet"), "parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(io.BytesIO(data)), frame)
    assert pq.read_table(pa.BufferReader(data)).column_names == ["when", "n", "s", "key"]


def test_loading_shares_the_buffer_instead_of_copying():
    frame = pd.DataFrame(
        {"f": np.arange(1000.0), "i": np.arange(1000), "t": pd.date_range("2024", periods=1000, freq="s")}
    )
    buffer = bytearray(frames.to_bytes(frames.to_table(frame, "ipc"), "ipc"))
    back = frames.load(buffer, "ipc")
    owner = np.frombuffer(buffer, dtype=np.uint8)
    for name in ("f", "i", "t"):
        assert np.shares_memory(back[name].array._ndarray, owner), name
    back.loc[5, "f"] = -1.0
    assert back.loc[5, "f"] == -1.0


@PROPERTY
@given(frame=data_frames())
def test_the_digest_names_the_data_and_survives_the_trip(frame):
    for i, dtype in enumerate(frame.dtypes):  # NaN sign and payload bits do not survive (pyarrow: NaN is null)
        if isinstance(dtype, np.dtype) and dtype.kind == "f":
            values = frame.iloc[:, i].to_numpy(copy=True)
            values[np.isnan(values)] = np.nan
            frame.isetitem(i, values)
    try:
        table = frames.to_table(frame, "ipc")
    except frames.NotArrow:
        return
    digest = frames.digest(table)
    if digest is None:  # nested Arrow types (pandas intervals) are hashed once serialised
        return
    assert frames.digest(frames.to_table(frame.copy(deep=True), "ipc")) == digest
    back = frames.load(bytearray(frames.to_bytes(table, "ipc")), "ipc")
    assert frames.digest(frames.to_table(back, "ipc")) == digest  # an identity cell's output is the same object


def test_any_change_changes_the_digest():
    frame = pd.DataFrame({"x": np.arange(1000.0), "s": pd.array([f"v{i}" for i in range(1000)], dtype="str")})
    base = frames.digest(frames.to_table(frame, "ipc"))
    changed = [
        frame.assign(x=frame.x.where(frame.index != 500, -1.0)),
        frame.assign(s=frame.s.where(frame.index != 7, "other")),
        frame.iloc[1:],
        frame.rename(columns={"x": "y"}),
        frame.set_axis(frame.index + 1),
        frame.astype({"x": "float32"}),
    ]
    digests = {frames.digest(frames.to_table(f, "ipc")) for f in changed}
    assert base not in digests
    assert len(digests) == len(changed)
    nested = pa.table({"l": pa.array([[1, 2], [3]])})
    assert frames.digest(nested) is None

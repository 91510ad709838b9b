"""DataFrames through %%celery and real workers on the session stack (local store): exact, by key, lazily."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

import jupyter_celery
from jupyter_celery.core.errors import EncodingError, FramePickledWarning, JobFailed
from jupyter_celery.core.messages import JobSpec
from jupyter_celery.core.objects import ObjectTag
from jupyter_celery.core.protocol import EventKind, Keys, new_job_id
from jupyter_celery.core.settings import ENV_PREFIX
from jupyter_celery.kernel.client import get_client, reset_client


def sample_frame(n: int = 50_000) -> pd.DataFrame:
    """Columns of the kinds the issue names, above the inline limit."""
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {
            "x": rng.random(n),
            "n": rng.integers(0, 1000, n),
            "s": pd.array([f"s{i % 97}" for i in range(n)], dtype="str"),
            "c": pd.Categorical(
                rng.choice(["lo", "hi", "mid"], n), categories=["lo", "mid", "hi", "unused"], ordered=True
            ),
            "t": pd.date_range("2026-01-01", periods=n, freq="min", tz="Europe/Paris"),
            "d": pd.to_timedelta(rng.integers(0, 10**6, n), unit="s"),
            "i": pd.array(np.where(np.arange(n) % 7 == 0, None, np.arange(n)), dtype="Int64"),
            "b": pd.array(np.where(np.arange(n) % 5 == 0, None, np.arange(n) % 2 == 0), dtype="boolean"),
        },
        index=pd.MultiIndex.from_arrays([np.arange(n) // 100, np.arange(n) % 100], names=["block", "row"]),
    )
    frame.columns.name = "fields"
    return frame


def objects_on_disk(stack) -> dict[str, tuple[int, float]]:
    """Every stored object with its inode and modification time: a rewrite changes both."""
    root = stack.base / "store"
    found = {}
    for path in root.rglob("*"):
        if path.is_file() and not path.name.startswith(".") and ".staging" not in path.parts:
            st = path.stat()
            found[str(path.relative_to(root))] = (st.st_ino, st.st_mtime_ns)
    return found


def jobs_of_owner(stack):
    return stack.redis.zrange(Keys().owner_jobs("tester"), 0, -1)


def test_frames_travel_both_ways_exactly(ip, stack):
    frame = sample_frame()
    ip.user_ns["frame"] = frame
    result = ip.run_cell(
        "%%celery\nsame = frame\ndoubled = frame.assign(x=frame.x * 2)\ncolumn = frame['s']\nframe.head(2)\n"
    )
    assert result.error_in_exec is None
    pd.testing.assert_frame_equal(ip.user_ns["same"], frame, check_exact=True, check_index_type=True)
    pd.testing.assert_series_equal(ip.user_ns["column"], frame["s"])
    assert ip.user_ns["doubled"]["x"].tolist() == (frame["x"] * 2).tolist()
    pd.testing.assert_frame_equal(result.result, frame.head(2))  # the final expression, exact too
    back = ip.user_ns["same"]
    back.loc[(0, 0), "x"] = -1.0  # what came back can be modified in place
    assert back.loc[(0, 0), "x"] == -1.0
    (job_id,) = jobs_of_owner(stack)
    objects = get_client().events.job_objects(job_id)
    assert len(objects) == 3  # frame (also same), doubled, column; frame.head(2) travels inline
    assert all(k.startswith("tester/objects/") and k.endswith(".arrow") for k in objects)  # Arrow IPC, by key


def test_resubmitting_an_unchanged_frame_uploads_nothing(ip, stack):
    ip.user_ns["frame"] = sample_frame(30_000)
    cell = "%%celery\nrows = len(frame)\n"
    assert ip.run_cell(cell).error_in_exec is None
    before = objects_on_disk(stack)
    written = get_client().codec.objects.bytes_written
    assert ip.run_cell(cell).error_in_exec is None
    assert objects_on_disk(stack) == before  # no new object, none rewritten
    assert get_client().codec.objects.bytes_written == written
    first, second = jobs_of_owner(stack)
    assert get_client().events.job_objects(first) == get_client().events.job_objects(second) != set()


def submit(code: str, inputs: dict, **kw) -> tuple[object, JobSpec]:
    client = get_client()
    job_id = new_job_id()
    encoded = {n: client.codec.encode(n, v, ObjectTag("tester", job_id, "input")) for n, v in inputs.items()}
    spec = JobSpec(id=job_id, kind="cell", code=code, owner="tester", inputs=encoded, **kw)
    return spec, encoded


def test_an_input_used_only_in_a_branch_not_taken_is_never_loaded(stack):
    client = get_client()
    big = pd.DataFrame({"v": np.arange(100_000)})
    code = "if flag:\n    total = int(big.v.sum())\nok = 1\n"
    spec, encoded = submit(code, {"big": big, "flag": False}, outputs=("ok", "total"))
    client.store.delete(encoded["big"]["key"])  # were the worker to read it, the job would fail
    job = client.submit(spec)
    values, _ = job.outputs(timeout=120, strict=False)
    assert values == {"ok": 1}

    spec, encoded = submit(code, {"big": big, "flag": True}, outputs=("ok", "total"))
    client.store.delete(encoded["big"]["key"])
    with pytest.raises(JobFailed, match=r"cannot load variable 'big': object .* is not in store file://.*expired"):
        client.submit(spec).manifest(timeout=120)
    assert client.events.history(spec.id)[-1].fields["reason"] == "store"


def test_a_lazily_loaded_input_that_fails_fails_the_job_even_if_the_cell_catches_it(stack):
    client = get_client()
    spec, encoded = submit(
        "try:\n    big.v.sum()\nexcept Exception:\n    pass\nok = 1\n", {"big": pd.DataFrame({"v": np.arange(50_000)})}
    )
    client.store.delete(encoded["big"]["key"])
    with pytest.raises(JobFailed, match="cannot load variable 'big'"):
        client.submit(spec).manifest(timeout=120)


def test_an_input_the_cell_certainly_reads_is_loaded_before_it_runs(stack):
    client = get_client()
    spec, encoded = submit("print('started')\ntotal = big.v.sum()\n", {"big": pd.DataFrame({"v": np.arange(50_000)})})
    client.store.delete(encoded["big"]["key"])
    job = client.submit(spec)
    with pytest.raises(JobFailed, match="cannot load variable 'big'"):
        job.manifest(timeout=120)
    assert EventKind.STDOUT not in {e.kind for e in job.events()}  # the cell never started


def test_named_datasets(ip, stack):
    frame = sample_frame(20_000)
    ref = jupyter_celery.put(frame, name="sales-test")
    assert (ref.name, ref.rows, ref.columns, ref.kind) == ("sales-test", 20_000, 8, "dataframe")
    assert jupyter_celery.put(frame, name="sales-test").created == ref.created  # unchanged: not written again
    pd.testing.assert_frame_equal(jupyter_celery.get("sales-test"), frame)
    pd.testing.assert_frame_equal(jupyter_celery.get("tester/sales-test"), frame)
    listed = jupyter_celery.datasets()
    assert [d.name for d in listed] == ["sales-test"]
    assert "<td>sales-test</td>" in listed._repr_html_()
    assert "20,000" in repr(listed)
    assert list(get_client().store.keys("tester/datasets/")) == ["tester/datasets/sales-test.parquet"]

    ip.user_ns["ref"] = ref
    from jupyter_celery.core.cellcode import analyse

    magics = ip.find_cell_magic("celery").__self__
    spec, _ = magics._build_spec(get_client(), "n = len(ref)", _args("-i ref"), analyse("n = len(ref)"), None)
    assert spec.inputs["ref"] == {"enc": "dataset", "name": "tester/sales-test", "key": ref.key, "format": "parquet"}
    result = ip.run_cell(
        "%%celery -i ref\nkind = type(ref).__name__\nrows = len(ref)\nhi = int((ref.c == 'hi').sum())\n"
    )
    assert result.error_in_exec is None
    assert (ip.user_ns["kind"], ip.user_ns["rows"]) == ("DataFrame", 20_000)
    assert ip.user_ns["hi"] == int((frame.c == "hi").sum())
    jupyter_celery.delete_dataset("sales-test")
    assert jupyter_celery.datasets() == []


def _args(line: str):
    from IPython.core.magic_arguments import parse_argstring

    from jupyter_celery.kernel.magics import CeleryMagics

    return parse_argstring(CeleryMagics.celery, line)


def test_a_frame_sent_pickled_warns_against_the_cell(ip, stack):
    ip.user_ns["mixed"] = pd.DataFrame({"m": [1, "a", None] * 20_000})
    with pytest.warns(FramePickledWarning, match=r"dataframe 'mixed' travels pickled") as caught:
        result = ip.run_cell("%%celery\nrows = len(mixed)\n")
    assert result.error_in_exec is None
    assert ip.user_ns["rows"] == 60_000
    assert caught[0].filename.startswith("Cell In[")  # the user's cell, not jupyter-celery's code


def test_a_frame_that_travels_pickled_warns_in_the_notebook(ip, stack, capsys):
    result = ip.run_cell("%%celery\nimport pandas as pd\nmixed = pd.DataFrame({'m': [1, 'a', None] * 20_000})\n")
    assert result.error_in_exec is None
    assert ip.user_ns["mixed"]["m"].tolist()[:3] == [1, "a", None]
    assert "FramePickledWarning: dataframe 'mixed' travels pickled" in capsys.readouterr().err


def test_a_store_failure_in_the_kernel_is_raised_before_submit(ip, stack, tmp_path, monkeypatch):
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    monkeypatch.setenv(ENV_PREFIX + "STORE_URL", not_a_directory.as_uri())
    reset_client()
    try:
        ip.user_ns["frame"] = sample_frame(10_000)
        result = ip.run_cell("%%celery\nrows = len(frame)\n")
        error = result.error_in_exec
        assert isinstance(error, EncodingError)
        assert error.name == "frame"
        assert f"in store {not_a_directory.as_uri()}" in str(error)
        assert jobs_of_owner(stack) == []
        assert stack.redis.llen("python_q") == 0
    finally:
        monkeypatch.undo()
        reset_client()
    assert os.environ[ENV_PREFIX + "STORE_URL"] == stack.env[ENV_PREFIX + "STORE_URL"]

"""A 1 GB DataFrame into an identity %%celery cell and back, beside the raw cost of the same bytes.

Our path: ``%%celery -q circuit_q`` / ``out = frame`` through an in-process IPython shell and a
temporary embedded stack (``jupyter-celery up``) whose store is a local directory or S3 (moto's
server, in a process of its own), until ``out`` is bound in the notebook and its data has been read
once. The anchors, in another process (so that the kernel's peak RSS is ours alone), on the same
store in the same run, interleaved round by round:

- raw: the same bytes moved the same way with pyarrow and boto3 directly: serialise + put + get +
  deserialise, twice (kernel to worker, worker to kernel), with the same format and the same boto3
  settings; a single trip is shown too;
- Celery's default path: the frame pickled into the message and the result (``pickle_echo.py``).

Also: the second submission of the unchanged frame (bytes uploaded, time), the kernel's peak RSS
against the frame's size, and what hashing costs beside serialising.

    python benchmarks/dataframe.py                       # local store, 1 GB, 3 rounds
    python benchmarks/dataframe.py --store moto          # S3 API, against moto's server
    python benchmarks/dataframe.py --format parquet      # jobs' frames as Parquet instead of Arrow IPC
    python benchmarks/dataframe.py --gb 0.2              # a frame small enough for Celery's pickled message
"""

from __future__ import annotations

import argparse
import hashlib
import io
import multiprocessing
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
BUCKET = "bench"


def build_frame(gb: float) -> pd.DataFrame:
    """Numeric, int and string columns (about 126 bytes a row), the same in every process."""
    rows = int(gb * 1e9 / 126)
    rng = np.random.default_rng(0)
    vocabulary = np.array([f"k{i:06d}" for i in range(100_000)], dtype=object)
    names = np.array([f"name-{i}" for i in range(977)], dtype=object)
    return pd.DataFrame(
        {
            **{f"f{i}": rng.random(rows) for i in range(8)},
            **{f"i{i}": rng.integers(0, 1 << 40, rows) for i in range(4)},
            "key": pd.array(vocabulary[rng.integers(0, len(vocabulary), rows)], dtype="str"),
            "name": pd.array(names[rng.integers(0, len(names), rows)], dtype="str"),
        }
    )


def touch(frame: pd.DataFrame) -> float:
    """Read every value once (what makes a lazily mapped frame resident, and what any use costs)."""
    total = 0.0
    for name in frame.columns:
        column = frame[name]
        total += float(column.str.len().sum()) if column.dtype == "str" else float(column.sum())
    return total


class PeakRSS:
    """Samples this process's RSS every few milliseconds while it runs."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, self.proc.memory_info().rss)


# --- the anchors, in their own process -------------------------------------------------------------


def s3_client(endpoint: str) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        request_checksum_calculation="when_required", response_checksum_validation="when_required",
        s3={"addressing_style": "path"}, retries={"mode": "standard", "max_attempts": 4},
    )  # fmt: skip
    return boto3.session.Session().client("s3", endpoint_url=endpoint, config=config)


def write(table: pa.Table, fmt: str, sink: Any) -> None:
    if fmt == "ipc":
        with pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
    else:
        pq.write_table(table, sink)


def read(source: Any, fmt: str) -> pa.Table:
    return pa.ipc.open_file(source).read_all() if fmt == "ipc" else pq.read_table(source)


def raw_trip(frame: pd.DataFrame, config: dict[str, Any], client: Any) -> tuple[pd.DataFrame, dict[str, float]]:
    """serialise + put + get + deserialise with pyarrow (and boto3) directly."""
    fmt, t = config["format"], {}
    start = time.perf_counter()
    table = pa.Table.from_pandas(frame)
    if config["store"] == "local":
        # A new file each time: the strings of a frame read through a mapping still point into the file
        # (pyarrow's to_pandas keeps them zero-copy), so rewriting it in place would crash them (SIGBUS).
        path = Path(config["raw_dir"]) / f"raw-{time.monotonic_ns()}.{fmt}"
        with pa.OSFile(str(path), "wb") as sink:  # the file is the stored object: serialise and put are one
            write(table, fmt, sink)
        t["serialise+put"] = time.perf_counter() - start
        mark = time.perf_counter()
        with pa.memory_map(str(path)) as source:
            out = read(source, fmt).to_pandas()
        t["get+deserialise"] = time.perf_counter() - mark
        path.unlink()  # the mapping outlives the name
    else:
        from boto3.s3.transfer import TransferConfig

        transfer = TransferConfig(multipart_threshold=config["part"], multipart_chunksize=config["part"])
        sink = pa.BufferOutputStream()
        write(table, fmt, sink)
        buffer = sink.getvalue()
        t["serialise"] = time.perf_counter() - start
        mark = time.perf_counter()
        client.upload_fileobj(pa.BufferReader(buffer), BUCKET, "raw/object", Config=transfer)
        t["put"] = time.perf_counter() - mark
        del buffer, sink
        mark = time.perf_counter()
        got = io.BytesIO()
        client.download_fileobj(BUCKET, "raw/object", got, Config=transfer)
        t["get"] = time.perf_counter() - mark
        mark = time.perf_counter()
        out = read(pa.BufferReader(got.getbuffer()), fmt).to_pandas()
        t["deserialise"] = time.perf_counter() - mark
    return out, t


def hashing_cost(frame: pd.DataFrame, fmt: str, directory: str) -> dict[str, float]:
    import xxhash

    from jupyter_celery.core import frames

    table = frames.to_table(frame, fmt)
    start = time.perf_counter()
    frames.digest(table)  # what the codec hashes: the Arrow data, before serialising
    arrow = time.perf_counter() - start
    path = Path(directory) / "hash-probe"
    start = time.perf_counter()
    with pa.OSFile(str(path), "wb") as sink:
        write(table, fmt, sink)
    serialise = time.perf_counter() - start
    data = memoryview(path.read_bytes())
    start = time.perf_counter()
    xxhash.xxh3_128_hexdigest(data)
    xxh3 = time.perf_counter() - start
    start = time.perf_counter()
    hashlib.blake2b(data, digest_size=16).hexdigest()
    blake = time.perf_counter() - start
    path.unlink()
    return {"serialise": serialise, "arrow digest": arrow, "xxh3-128": xxh3, "blake2b": blake, "bytes": len(data)}


def anchor_process(conn: Any, config: dict[str, Any]) -> None:
    """Builds the same frame, then runs the anchors on command."""
    frame = build_frame(config["gb"])
    client = s3_client(config["endpoint"]) if config["store"] == "moto" else None
    conn.send("ready")
    while True:
        command, arg = conn.recv()
        if command == "stop":
            return
        if command == "warm":  # imports and first connections, outside the measurements
            raw_trip(frame.head(1000), config, client)
            conn.send("warm")
            continue
        if command == "raw":
            frame.iloc[0, 0] = float(arg)
            start = time.perf_counter()
            back, first = raw_trip(frame, config, client)  # kernel -> worker
            back, second = raw_trip(back, config, client)  # worker -> kernel
            touch(back)
            total = time.perf_counter() - start
            del back
            parts = {k: v + second[k] for k, v in first.items()}
            conn.send({"round trip": total, "one trip": sum(first.values()), **parts})
        elif command == "celery":
            conn.send(celery_default(frame, config))
        elif command == "hash":
            conn.send(hashing_cost(frame, config["format"], config["raw_dir"]))


def celery_default(frame: pd.DataFrame, config: dict[str, Any]) -> dict[str, Any]:
    sys.path.insert(0, str(HERE))
    import pickle_echo

    start = time.perf_counter()
    try:
        result = pickle_echo.app.send_task(pickle_echo.TASK, args=[frame], queue=pickle_echo.QUEUE, retry=False)
        back = result.get(timeout=900)
        touch(back)
        return {"round trip": time.perf_counter() - start}
    except Exception as exc:  # what Redis says about a message this large
        return {"error": f"{type(exc).__name__}: {str(exc)[:160]}", "after": time.perf_counter() - start}


# --- the run ---------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_moto(log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=log.open("wb"),
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1).close()
            return proc, url
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("moto's server did not start") from None
            time.sleep(0.2)


def uploads_in(log: Path, since: int) -> list[str]:
    """PUT/POST requests to objects that moto's server logged after byte ``since`` of its log."""
    text = log.read_bytes()[since:].decode(errors="replace")
    return re.findall(r'"(?:PUT|POST) /bench/\S+', text)


def store_snapshot(store: Any) -> dict[str, tuple[int, float]]:
    return {info.key: (info.size, info.modified) for info in store.objects("")}


def median(values: list[float]) -> float:
    return statistics.median(values)


class Run:
    """The figures of one run, round by round."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = {"ours": [], "resubmit": [], "raw": [], "raw one trip": [], "celery": []}
        self.raw_parts: list[dict[str, float]] = []
        self.peaks: list[int] = []
        self.uploads: list[tuple[int, int, int]] = []  # re-submission: (kernel bytes, store growth, objects changed)
        self.moto_uploads: list[int] = []
        self.celery_error = ""
        self.hashing: dict[str, float] = {}


def run_cell(ip: Any, cell: str) -> None:
    result = ip.run_cell(cell, silent=True)
    if result.error_in_exec is not None:
        raise result.error_in_exec


def measure_round(r: int, ip: Any, conn: Any, store: Any, run: Run, *, moto_log: Path | None) -> None:
    from jupyter_celery.kernel.client import get_client

    frame = ip.user_ns["frame"]
    cell = "%%celery -q circuit_q\nout = frame\n"
    conn.send(("raw", r))
    raw = conn.recv()
    run.times["raw"].append(raw["round trip"])
    run.times["raw one trip"].append(raw["one trip"])
    run.raw_parts.append(raw)

    frame.iloc[0, 0] = float(r)  # new content: the first submission of each round uploads
    monitor = PeakRSS()
    start = time.perf_counter()
    run_cell(ip, cell)
    touch(ip.user_ns["out"])
    run.times["ours"].append(time.perf_counter() - start)
    run.peaks.append(monitor.stop())
    assert ip.user_ns["out"].shape == frame.shape

    before, written = store_snapshot(store), get_client().codec.objects.bytes_written
    log_mark = moto_log.stat().st_size if moto_log else 0
    start = time.perf_counter()
    run_cell(ip, cell)
    touch(ip.user_ns["out"])
    run.times["resubmit"].append(time.perf_counter() - start)
    after = store_snapshot(store)
    growth = sum(s for s, _ in after.values()) - sum(s for s, _ in before.values())
    changed = sum(1 for k, v in after.items() if before.get(k) != v)
    run.uploads.append((get_client().codec.objects.bytes_written - written, growth, changed))
    if moto_log:
        run.moto_uploads.append(len(uploads_in(moto_log, log_mark)))
    del ip.user_ns["out"]

    conn.send(("celery", r))
    celery = conn.recv()
    if "error" in celery:
        run.celery_error = f"{celery['error']} (after {celery['after']:.1f} s)"
    else:
        run.times["celery"].append(celery["round trip"])


def report(args: argparse.Namespace, run: Run, size: int, rows: int, baseline: int) -> None:
    t = {k: median(v) for k, v in run.times.items() if v}
    raw = t["raw"]
    print(f"{args.gb:g} GB frame ({size / 1e9:.2f} GB in memory, {rows:,} rows), store {args.store}, "
          f"format {args.format}, {args.rounds} rounds, {os.cpu_count()} CPUs (seconds, medians)")  # fmt: skip
    print(f"  raw pyarrow+boto3, one trip      {t['raw one trip']:7.2f}")
    parts = {k: median([p[k] for p in run.raw_parts]) for k in run.raw_parts[0] if k not in ("round trip", "one trip")}
    detail = ", ".join(f"{k} {v:.2f}" for k, v in parts.items())
    print(f"  raw, there and back (2 trips)    {raw:7.2f}   ({detail})")
    print(f"  %%celery identity cell           {t['ours']:7.2f}   ratio {t['ours'] / raw:.2f} to raw "
          f"(target <= 1.25); {t['ours'] / t['raw one trip']:.2f} to one raw trip")  # fmt: skip
    u = [max(x[i] for x in run.uploads) for i in range(3)]
    moto = f", moto PUT/POST requests {max(run.moto_uploads)}" if run.moto_uploads else ""
    print(f"  second submission, unchanged     {t['resubmit']:7.2f}   uploaded: kernel {u[0]} B, "
          f"store growth {u[1]} B, objects changed {u[2]}{moto}")  # fmt: skip
    if "celery" in t:
        print(f"  Celery default (pickled message) {t['celery']:7.2f}   ratio {t['celery'] / raw:.2f} to raw")
    else:
        print(f"  Celery default (pickled message)  fails: {run.celery_error}")
    peak = max(run.peaks)
    print(f"  kernel peak RSS {peak / 1e9:.2f} GB = {peak / size:.2f}x the frame (target <= 2.5x; "
          f"{baseline / 1e9:.2f} GB before the frame existed)")  # fmt: skip
    h = run.hashing
    share = h["arrow digest"] / h["serialise"]
    print(f"  hashing: the Arrow data (what the codec does) {h['arrow digest']:.3f} s = {share:.1%} of serialising "
          f"it to {args.format} ({h['serialise']:.2f} s, {h['bytes'] / 1e9:.2f} GB); of the file: "
          f"xxh3-128 {h['xxh3-128']:.3f} s, blake2b {h['blake2b']:.2f} s")  # fmt: skip


def configure(args: argparse.Namespace, state: Path) -> tuple[dict[str, Any], subprocess.Popen[bytes] | None]:
    """The environment of the run (and moto's server, when the store is S3)."""
    for name in [k for k in os.environ if k.startswith("JUPYTER_CELERY_")]:
        del os.environ[name]
    os.environ.update(JUPYTER_CELERY_STATE_DIR=str(state), JUPYTER_CELERY_FRAME_FORMAT=args.format)
    config: dict[str, Any] = {"store": args.store, "format": args.format, "gb": args.gb, "raw_dir": str(state),
                              "part": args.part_mb << 20, "endpoint": ""}  # fmt: skip
    if args.store != "moto":
        return config, None
    moto, endpoint = start_moto(state / "moto.log")
    config["endpoint"] = endpoint
    os.environ.update(
        JUPYTER_CELERY_STORE_URL=f"s3://{BUCKET}/jc", JUPYTER_CELERY_S3_ENDPOINT_URL=endpoint,
        JUPYTER_CELERY_S3_PART_MB=str(args.part_mb), AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
    )  # fmt: skip
    s3_client(endpoint).create_bucket(Bucket=BUCKET)
    return config, moto


def main() -> int:  # noqa: PLR0915 - set up, measure, report, tear down
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", choices=("local", "moto"), default="local")
    parser.add_argument("--format", choices=("ipc", "parquet"), default="ipc")
    parser.add_argument("--gb", type=float, default=1.0, help="size of the frame (default 1 GB)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--part-mb", type=int, default=2048,
        help="S3 part size: above the object's size, as moto rebuilds the whole object for each ranged GET",
    )  # fmt: skip
    args = parser.parse_args()

    state = Path(tempfile.mkdtemp(prefix="jc-bench-df-"))
    config, moto = configure(args, state)
    from jupyter_celery.cli.stack import down, up

    if up(state, detach=True, echo=lambda _line: None) != 0:
        print("could not start the stack", file=sys.stderr)
        return 1
    pickle_worker = None
    anchor = None
    try:
        from IPython.testing.globalipapp import start_ipython

        from jupyter_celery.core.settings import Settings
        from jupyter_celery.core.store import store_for

        settings = Settings.from_env()
        os.environ["BENCH_BROKER_URL"] = settings.broker_url.rsplit("/", 1)[0] + "/2"
        pickle_worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "pickle_echo", "worker", "-Q", "bench_pickle", "-P", "solo",
             "--without-gossip", "--without-mingle", "--loglevel=ERROR"],
            cwd=HERE, stdout=subprocess.DEVNULL, stderr=(state / "pickle_echo.log").open("wb"),
            env={**os.environ, "C_FORCE_ROOT": "1"},  # Celery refuses pickle as root (CI runs as root): anchor only
        )  # fmt: skip
        context = multiprocessing.get_context("spawn")
        conn, child_conn = context.Pipe()
        anchor = context.Process(target=anchor_process, args=(child_conn, config), daemon=True)
        anchor.start()

        baseline = psutil.Process().memory_info().rss
        frame = build_frame(args.gb)
        ip = start_ipython()
        ip.run_line_magic("load_ext", "jupyter_celery")
        ip.user_ns["frame"] = frame
        assert conn.recv() == "ready"
        conn.send(("warm", 0))
        ip.user_ns["warm"] = frame.head(1000)
        run_cell(ip, "%%celery -q circuit_q\nwarm_out = warm\n")  # the worker imports pandas, outside the figures
        assert conn.recv() == "warm"

        run = Run()
        for r in range(args.rounds):
            measure_round(r, ip, conn, store_for(settings), run, moto_log=state / "moto.log" if moto else None)
        conn.send(("hash", 0))
        run.hashing = conn.recv()
        conn.send(("stop", 0))
        report(args, run, int(frame.memory_usage(deep=True).sum()), len(frame), baseline)
    finally:
        if anchor is not None:
            anchor.join(timeout=30)
        if pickle_worker is not None:
            pickle_worker.terminate()
            pickle_worker.wait()
        down(state, echo=lambda _line: None)
        if moto is not None:
            moto.terminate()
            moto.wait()
        shutil.rmtree(state, ignore_errors=True)  # the store holds gigabytes of frames
    return 0


if __name__ == "__main__":
    sys.exit(main())

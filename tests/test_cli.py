"""The jupyter-celery command: up / status / down / worker, each starting real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import psutil
import pytest

from jupyter_celery.cli.redis_server import free_port
from jupyter_celery.cli.schedule import SUBCOMMANDS
from jupyter_celery.core.messages import JobSpec
from jupyter_celery.core.protocol import new_job_id
from jupyter_celery.core.settings import ENV_PREFIX, Settings
from jupyter_celery.kernel.client import Client

pytestmark = pytest.mark.stack


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update(extra)
    return env


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jupyter_celery", *args],
        env=env if env is not None else clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def processes_using(path) -> set[int]:
    found = set()
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if any(str(path) in part for part in proc.info["cmdline"] or []):
            found.add(proc.info["pid"])
    return found


def recorded_pids(state_dir) -> list[int]:
    return [p["pid"] for p in json.loads((state_dir / "stack.json").read_text())["processes"]]


def run_a_cell(state_dir) -> dict:
    settings = Settings.from_env(clean_env(**{ENV_PREFIX + "STATE_DIR": str(state_dir)}))
    client = Client(settings)
    try:
        job = client.submit(JobSpec(id=new_job_id(), kind="cell", code="x = 6 * 7", outputs=("x",), owner="t"))
        return job.result(timeout=60)
    finally:
        client.close()


def test_up_status_second_up_and_down(tmp_path):
    state = tmp_path / "state"
    started = cli("up", "--detach", "--state-dir", str(state))
    assert started.returncode == 0, started.stdout + started.stderr
    assert "jupyter-celery stack is up" in started.stdout
    pids = recorded_pids(state)
    assert len(pids) == 4  # redis, a worker per queue, beat
    assert all(psutil.pid_exists(p) for p in pids)
    assert "beat " in started.stdout

    status = cli("status", "--state-dir", str(state))
    assert status.returncode == 0, status.stdout + status.stderr
    assert "queue python_q   1 worker(s)" in status.stdout
    assert "queue circuit_q  1 worker(s)" in status.stdout
    assert "beat: active" in status.stdout and "NOT RUNNING" not in status.stdout
    assert "store file://" in status.stdout

    # a notebook on this machine finds the stack through the connection file
    assert run_a_cell(state) == {"x": 42}

    before = (state / "stack.json").read_text()
    ours = processes_using(state)
    again = cli("up", "--detach", "--state-dir", str(state))
    assert again.returncode == 0
    assert "already up" in again.stdout
    assert (state / "stack.json").read_text() == before
    assert processes_using(state) == ours

    decoy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        stopped = cli("down", "--state-dir", str(state))
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids)
        assert processes_using(state) == set()
        assert decoy.poll() is None  # down stops only what up started
    finally:
        decoy.kill()
        decoy.wait()
    assert not (state / "stack.json").exists()

    after = cli("status", "--state-dir", str(state))
    assert after.returncode != 0
    assert "not configured" in after.stderr


def test_stale_connection_file_is_replaced(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    create_time = psutil.Process(gone.pid).create_time()
    gone.wait()
    stale = {
        "broker_url": f"redis://127.0.0.1:{free_port()}/0",
        "store_url": (state / "store").as_uri(),
        "processes": [{"name": "redis", "pid": gone.pid, "create_time": create_time}],
    }
    (state / "stack.json").write_text(json.dumps(stale))
    status = cli("status", "--state-dir", str(state))
    assert status.returncode != 0
    assert "NOT RUNNING" in status.stdout

    started = cli("up", "--detach", "--state-dir", str(state))
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert "Replacing a stale connection file" in started.stdout
        assert gone.pid not in recorded_pids(state)
        assert cli("status", "--state-dir", str(state)).returncode == 0
    finally:
        assert cli("down", "--state-dir", str(state)).returncode == 0


def test_foreground_up_stops_everything_on_ctrl_c(tmp_path):
    state = tmp_path / "state"
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter_celery", "up", "--state-dir", str(state)],
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "Press Ctrl-C" in line:
                break
        assert any("stack is up" in line for line in lines), "".join(lines)
        pids = recorded_pids(state)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, "".join(lines) + rest
    assert "stopped worker python_q" in rest
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids)
    assert not (state / "stack.json").exists()


def test_status_redacts_passwords_and_fails_when_the_broker_is_down():
    url = f"redis://:s3cretpw@127.0.0.1:{free_port()}/0"
    result = cli("status", env=clean_env(**{ENV_PREFIX + "BROKER_URL": url, ENV_PREFIX + "STORE_URL": "file:///tmp"}))
    assert result.returncode == 1
    assert "UNREACHABLE" in result.stdout
    assert "s3cretpw" not in result.stdout + result.stderr
    assert "redis://:***@127.0.0.1" in result.stdout


@pytest.mark.parametrize(
    "command",
    [[], ["up"], ["down"], ["status"], ["worker"], ["gc"], ["beat"], ["schedule"]]
    + [["schedule", action] for action in SUBCOMMANDS],
)
def test_every_command_has_help(command):
    result = cli(*command, "--help")
    assert result.returncode == 0
    assert "usage: jupyter-celery" in result.stdout

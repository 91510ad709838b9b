"""Processes started by ``jupyter-celery up``, recorded so that ``down`` stops exactly them."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from dataclasses import asdict, dataclass
from typing import Any

import psutil


@dataclass(frozen=True)
class ProcessRecord:
    """A started process: its pid and creation time (a recycled pid is not mistaken for it)."""

    name: str
    pid: int
    create_time: float
    log: str = ""

    @classmethod
    def of(cls, name: str, process: subprocess.Popen[Any], log: str = "") -> ProcessRecord:
        return cls(name=name, pid=process.pid, create_time=psutil.Process(process.pid).create_time(), log=log)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProcessRecord:
        return cls(**{k: data[k] for k in ("name", "pid", "create_time", "log") if k in data})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def process(self) -> psutil.Process | None:
        """The live process, or None when it has exited (or the pid now belongs to another one)."""
        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.create_time) > 0.01:
                return None
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
        except psutil.Error:
            return None
        return proc

    def alive(self) -> bool:
        return self.process() is not None


def stop(records: list[ProcessRecord], grace: float) -> list[str]:
    """SIGTERM each live process (and its children), SIGKILL what is left after ``grace`` seconds.

    Returns a line per process saying what happened.
    """
    report: list[str] = []
    targets: list[psutil.Process] = []
    for record in records:
        proc = record.process()
        if proc is None:
            report.append(f"{record.name} (pid {record.pid}) was not running")
            continue
        try:
            children = proc.children(recursive=True)
            proc.send_signal(signal.SIGTERM)
        except psutil.Error:
            continue
        targets += [proc, *children]
        report.append(f"stopped {record.name} (pid {record.pid})")
    _gone, alive = psutil.wait_procs(targets, timeout=grace)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            continue
    psutil.wait_procs(alive, timeout=5)
    # reap our own direct children, if up is still their parent
    for proc in targets:
        if proc.pid != os.getpid():
            with contextlib.suppress(ChildProcessError):
                os.waitpid(proc.pid, os.WNOHANG)
    return report

"""Fixtures for tests that drive a real Jupyter kernel (jupyter_client)."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from jupyter_client.manager import start_new_kernel


@dataclass
class Execution:
    """What one ``execute_request`` produced on IOPub."""

    stdout: str = ""
    stderr: str = ""
    results: list[dict[str, Any]] = field(default_factory=list)  # execute_result data bundles
    displays: list[dict[str, Any]] = field(default_factory=list)  # display_data messages' content
    error: dict[str, Any] | None = None
    payload: list[dict[str, Any]] = field(default_factory=list)  # execute_reply payloads (pager, ...)
    counts: dict[str, int] = field(default_factory=dict)  # IOPub messages by type

    @property
    def result(self) -> str | None:
        return self.results[-1].get("text/plain") if self.results else None

    @property
    def traceback(self) -> str:
        return "\n".join(self.error["traceback"]) if self.error else ""


class KernelRunner:
    """Executes code in a real ipykernel and collects its outputs."""

    def __init__(self) -> None:
        self.manager, self.client = start_new_kernel(kernel_name="python3", startup_timeout=60)

    def run(self, code: str, timeout: float = 120) -> Execution:
        msg_id = self.client.execute(code, store_history=True)
        out = Execution()
        while True:
            try:
                msg = self.client.get_iopub_msg(timeout=timeout)
            except queue.Empty:
                raise TimeoutError(f"no output from the kernel within {timeout}s for {code!r}") from None
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            out.counts[kind] = out.counts.get(kind, 0) + 1
            if kind == "stream":
                if content["name"] == "stdout":
                    out.stdout += content["text"]
                else:
                    out.stderr += content["text"]
            elif kind == "execute_result":
                out.results.append(content["data"])
            elif kind == "display_data":
                out.displays.append(content)
            elif kind == "error":
                out.error = content
            elif kind == "status" and content["execution_state"] == "idle":
                reply = self.client.get_shell_msg(timeout=timeout)
                while reply["parent_header"].get("msg_id") != msg_id:
                    reply = self.client.get_shell_msg(timeout=timeout)
                out.payload = reply["content"].get("payload", [])
                return out

    def value(self, expression: str) -> str:
        """The repr of ``expression`` in the kernel."""
        out = self.run(expression)
        assert out.error is None, out.traceback
        assert out.result is not None, f"{expression!r} has no value"
        return out.result

    def shutdown(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


@pytest.fixture(scope="module")
def kernel(running_stack: Any) -> Iterator[KernelRunner]:
    """A real kernel, started after the stack so it inherits the stack's environment."""
    runner = KernelRunner()
    runner.run("%load_ext jupyter_celery")
    yield runner
    runner.shutdown()

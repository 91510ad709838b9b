"""A loopback HTTP proxy in front of a real S3 endpoint (moto's server, or MinIO).

It forwards every request unchanged (SigV4 signatures stay valid: the bytes are not touched),
records what it saw (method, path, body size), and on demand answers a request itself with an
HTTP error or resets the connection, so tests observe real retries, real 403s and real upload
counts against a real server.
"""

from __future__ import annotations

import socket
import struct
import threading
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Request:
    method: str
    path: str
    body: int  # bytes


@dataclass
class Fault:
    """Answer matching requests with ``status`` (an S3 XML error ``code``), or reset the connection."""

    method: str | None = None
    contains: str = ""
    status: int = 0
    code: str = ""
    reset: bool = False
    times: int = 1
    hits: int = field(default=0)

    def matches(self, method: str, path: str) -> bool:
        return self.hits < self.times and (self.method in (None, method)) and self.contains in path


def _read_head(conn: socket.socket, buffer: bytearray) -> bytes | None:
    while b"\r\n\r\n" not in buffer:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        buffer += chunk
    end = buffer.index(b"\r\n\r\n") + 4
    head = bytes(buffer[:end])
    del buffer[:end]
    return head


def _headers(head: bytes) -> dict[str, str]:
    lines = head.decode("latin-1").split("\r\n")[1:]
    return {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}


def _read_exact(conn: socket.socket, buffer: bytearray, n: int) -> bytes:
    while len(buffer) < n:
        chunk = conn.recv(max(65536, n - len(buffer)))
        if not chunk:
            raise ConnectionError("peer closed mid-message")
        buffer += chunk
    data = bytes(buffer[:n])
    del buffer[:n]
    return data


def _read_chunked(conn: socket.socket, buffer: bytearray) -> bytes:
    out = bytearray()
    while True:
        while b"\r\n" not in buffer:
            buffer += conn.recv(65536)
        line_end = buffer.index(b"\r\n")
        size = int(bytes(buffer[:line_end]).split(b";")[0], 16)
        out += _read_exact(conn, buffer, line_end + 2 + size + 2)
        if size == 0:
            return bytes(out)


def _read_body(conn: socket.socket, buffer: bytearray, headers: dict[str, str], *, until_close: bool) -> bytes:
    if "content-length" in headers:
        return _read_exact(conn, buffer, int(headers["content-length"]))
    if headers.get("transfer-encoding", "").lower() == "chunked":
        return _read_chunked(conn, buffer)
    if until_close:
        while chunk := conn.recv(65536):
            buffer += chunk
        data = bytes(buffer)
        buffer.clear()
        return data
    return b""


class FaultProxy:
    """Forwards loopback HTTP to ``upstream``; see the module docstring."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.requests: list[Request] = []
        self.faults: list[Fault] = []
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        threading.Thread(target=self._accept, name="s3proxy", daemon=True).start()

    def inject(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()
            self.requests.clear()

    def seen(self, method: str | None = None, contains: str = "") -> list[Request]:
        with self._lock:
            return [r for r in self.requests if method in (None, r.method) and contains in r.path]

    def close(self) -> None:
        self._server.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _fault_for(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, path):
                    fault.hits += 1
                    return fault
        return None

    def _serve(self, conn: socket.socket) -> None:
        buffer = bytearray()
        try:
            while True:
                head = _read_head(conn, buffer)
                if head is None:
                    return
                method, path = head.split(b" ", 2)[:2]
                headers = _headers(head)
                with self._lock:
                    self.requests.append(Request(method.decode(), path.decode(), int(headers.get("content-length", 0))))
                fault = self._fault_for(method.decode(), path.decode())
                if fault is not None and fault.reset:
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
                    return
                if fault is not None:  # answered before the body, as a server refusing a request does
                    xml = f"<Error><Code>{fault.code}</Code><Message>injected by the test</Message></Error>".encode()
                    payload = b"" if method == b"HEAD" else xml
                    conn.sendall(
                        f"HTTP/1.1 {fault.status} Injected\r\nContent-Type: application/xml\r\n"
                        f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                        + payload
                    )
                    return
                if headers.get("expect", "").lower() == "100-continue":
                    conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                    head = b"\r\n".join(line for line in head.split(b"\r\n") if not line.lower().startswith(b"expect:"))
                body = _read_body(conn, buffer, headers, until_close=False)
                reply, keep_alive = self._forward(method, head, body)
                conn.sendall(reply)
                if not keep_alive:
                    return
        except OSError:
            return
        finally:
            conn.close()

    def _forward(self, method: bytes, head: bytes, body: bytes) -> tuple[bytes, bool]:
        """The upstream's reply, relayed as received, and whether the client connection can stay open."""
        with socket.create_connection(self.upstream) as up:
            up.sendall(head + body)
            buffer = bytearray()
            reply = _read_head(up, buffer)
            if reply is None:
                raise ConnectionError("upstream closed")
            status = int(reply.split(b" ", 2)[1])
            if method == b"HEAD" or status in (204, 304):
                return reply, True
            headers = _headers(reply)
            framed = "content-length" in headers or headers.get("transfer-encoding", "").lower() == "chunked"
            return reply + _read_body(up, buffer, headers, until_close=not framed), framed

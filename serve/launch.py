"""Running a served scenario on uvicorn: in this process (a thread), or as its own process.

``extractgym serve`` runs :func:`run`; tests and benchmarks use :func:`in_thread` (real HTTP on loopback, in
process) and :func:`in_process` (a separate ``extractgym serve`` process they can kill).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from extractgym.serve.app import MAX_BODY, TARPIT, serve_app
from extractgym.serve.state import ServiceServer

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def run(server: ServiceServer, host: str = LOOPBACK, port: int = 8000, max_body: int = MAX_BODY,
        log_level: str = "warning") -> None:
    """Serve until interrupted."""
    import uvicorn

    uvicorn.run(serve_app(server, max_body, TARPIT), host=host, port=port, log_level=log_level, access_log=False)


@contextmanager
def in_thread(server: ServiceServer, host: str = LOOPBACK, max_body: int = MAX_BODY) -> Iterator[str]:
    """Serve on a free loopback port from a thread of this process; yields the base URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind((host, 0))
    config = uvicorn.Config(serve_app(server, max_body, TARPIT), log_level="warning", access_log=False, lifespan="on")
    userver = uvicorn.Server(config)
    thread = threading.Thread(target=userver.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not userver.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        userver.should_exit = True
        thread.join(timeout=30)
        sock.close()


@contextmanager
def in_process(args: Sequence[str], port: int | None = None, host: str = LOOPBACK, timeout: float = 120.0,
               env: dict[str, str] | None = None, log: Path | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """Start ``extractgym serve ARGS --host HOST --port PORT`` as its own process; yields ``(url, process)``.

    The process is killed on exit if still running. Its output goes to ``log`` (default: discarded).
    """
    import httpx

    port = port or free_port(host)
    cmd = [sys.executable, "-m", "extractgym.cli", "serve", *args, "--host", host, "--port", str(port)]
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115  # closed below
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    url = f"http://{host}:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"extractgym serve exited with code {proc.returncode}" +
                                   (f" (see {log})" if log else ""))
            try:
                if httpx.get(url + "/v1/services", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"extractgym serve did not answer within {timeout} s")
            time.sleep(0.1)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if log:
            out.close()

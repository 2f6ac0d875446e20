"""Process lifecycle: start in its own session, log to a file, wait for readiness, stop by PID."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUN_DIR = REPO / ".run"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return 200 <= r.status < 300
    except Exception:
        return False


def wait_until(predicate, timeout: float, what: str, interval: float = 0.2, proc: "Service | None" = None):
    """Polls `predicate` until it returns a truthy value; raises with `what` on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode} while waiting for {what}; log: {proc.log_path}\n{proc.tail()}")
        time.sleep(interval)
    tail = f"\n--- last lines of {proc.log_path} ---\n{proc.tail()}" if proc else ""
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}{tail}")


class Service:
    """A child process in its own session (so its children can be stopped with it)."""

    def __init__(self, name: str, cmd: list[str], log_path: Path, env: dict | None = None, cwd: Path | None = None):
        self.name = name
        self.cmd = cmd
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        full_env = os.environ.copy()
        # An inherited CA bundle breaks clients of plain-HTTP loopback servers (DESIGN.md).
        full_env.pop("AWS_CA_BUNDLE", None)
        full_env.update(env or {})
        self._log = open(self.log_path, "ab")
        self.popen = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=full_env,
                                      cwd=str(cwd) if cwd else None, start_new_session=True)
        self.pid = self.popen.pid

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        """Sends `sig` to the process group this service leads (its PID)."""
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait up to `timeout`, then SIGKILL (Milvus can hang on SIGTERM with a loaded collection)."""
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.popen.wait(timeout=30)
        # Children that outlived the leader are still in the group.
        self.signal(signal.SIGKILL)
        self._log.close()
        return self.popen.returncode

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.popen.wait(timeout=30)


def send_json(handler, code: int, body) -> None:
    """Answers an http.server request with `body` as JSON (the fakes' one response helper)."""
    data = json.dumps(body).encode()
    handler.send_response(code)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)

"""A real redis-server for the tests, on a free loopback port, without persistence (a restart
comes back empty), in its own directory. Stop, freeze and restart it like an operator's
outage would."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(self, directory: Path, password: str | None = None, tls: bool = False) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed: `make test` installs it (scripts/ensure-system-deps.sh)")
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.password = password
        self.tls = tls
        self.ca_file = directory / "ca.pem"

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def _certificates(self) -> list[str]:
        """A throwaway CA and a server certificate for 127.0.0.1 (openssl), as redis-server options."""
        d = self.directory
        run = lambda *a: subprocess.run(["openssl", *a], cwd=d, check=True, capture_output=True)  # noqa: E731
        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=spikeguard test CA")
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=127.0.0.1")
        (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
        run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.pem", "-days", "2", "-extfile", "san.cnf")
        return ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(d / "server.pem"),
                "--tls-key-file", str(d / "server.key"), "--tls-ca-cert-file", str(d / "ca.pem"),
                "--tls-auth-clients", "no"]

    def start(self) -> "RedisServer":
        self.directory.mkdir(parents=True, exist_ok=True)
        listen = self._certificates() if self.tls else ["--port", str(self.port)]
        auth = ["--requirepass", self.password] if self.password else []
        self.process = subprocess.Popen(
            [self.binary, *listen, *auth, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.directory), "--protected-mode", "yes", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                self.client().ping()
                return self
            except Exception:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def client(self):
        import redis

        extra = {"ssl_ca_certs": str(self.ca_file)} if self.tls else {}
        return redis.Redis.from_url(self.url, socket_timeout=2, password=self.password, **extra)

    def freeze(self) -> None:
        os.kill(self.process.pid, signal.SIGSTOP)  # type: ignore[union-attr]

    def thaw(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)  # type: ignore[union-attr]

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)
            self.process.kill()
            self.process.wait(10)

    def restart_empty(self) -> None:
        """Killed and started again on the same port: no persistence, so it comes back empty."""
        self.kill()
        self.start()


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.kill()

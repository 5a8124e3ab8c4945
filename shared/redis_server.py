"""Start a private redis-server on a free loopback port: the embedded demo, the benchmark and
the tests use this, so none of them needs a Redis already running."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from shared.errors import ConfigurationError
from shared.processes import stop_process


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A redis-server child process bound to 127.0.0.1; a context manager that always stops it."""

    def __init__(self, *, port: int | None = None, directory: str | Path | None = None,
                 appendonly: bool = False, password: str | None = None):
        binary = shutil.which("redis-server")
        if not binary:
            raise ConfigurationError("redis-server is not installed; "
                                     "run scripts/ensure-redis.sh (or apt-get install redis-server)")
        self.binary: str = binary
        self.port = port or free_port()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if directory is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="tidyq-redis-")
            directory = self._tmp.name
        self.directory = Path(directory)
        self.appendonly = appendonly
        self.password = password
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
                "--save", "", "--appendonly", "yes" if self.appendonly else "no",
                "--daemonize", "no", "--loglevel", "warning", "--logfile", str(self.directory / "redis.log")]
        if self.password:
            args += ["--requirepass", self.password]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ConfigurationError(f"redis-server exited at start; see {self.directory / 'redis.log'}")
            if self.ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise ConfigurationError(f"redis-server did not answer on port {self.port} within {timeout}s")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                if self.password:
                    s.sendall(f"AUTH {self.password}\r\n".encode())
                    s.recv(64)
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, *, kill: bool = False) -> None:
        proc, self.process = self.process, None
        stop_process(proc, kill=kill)

    def restart(self) -> RedisServer:
        self.stop()
        return self.start()

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

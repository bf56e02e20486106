"""A real `mlflow server` on 127.0.0.1, in its own process, over a sqlite store and an artifact folder: for
tests and benchmarks that need a server (an outage is a SIGKILL of it). It starts `python -m mlflow
server`; nothing here imports mlflow."""

from __future__ import annotations

import os
from pathlib import Path


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env() -> dict[str, str]:
    """The server's environment: no tracking URI of the caller's, and no job execution unless asked for.

    MLflow 3's server also starts a job runner with seven huey consumer processes (for its GenAI jobs),
    about 10 CPU seconds per start that a tracking server for training runs never uses; set
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true to have them."""
    return {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ, "MLFLOW_TRACKING_URI": ""}


class MlflowServer:
    """A real `mlflow server` process on a loopback port, over a sqlite store and artifact folder in
    `root`; `stop()` SIGKILLs it (an outage) and `start()` brings it back on the same port and store."""

    def __init__(self, root: Path, port: int | None = None):
        self.root, self.port = Path(root), port or free_port()
        self.root.mkdir(parents=True, exist_ok=True)
        self.uri, self.process = f"http://127.0.0.1:{self.port}", None

    def start(self, timeout: float = 120) -> "MlflowServer":
        import subprocess
        import sys
        import time
        import urllib.request

        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
             "--artifacts-destination", str(self.root / "artifacts"), "--workers", "1"],
            cwd=self.root, env=server_env(), stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(f"{self.uri}/health", timeout=2).read()
                return self
            except OSError:
                assert self.process.poll() is None and time.monotonic() < deadline, "mlflow server did not start"
                time.sleep(0.3)

    def stop(self) -> None:
        """Kills the server and its workers at once (SIGKILL to its process group), as a crash would."""
        import signal

        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        self.process = None

"""A real uvicorn server on a free localhost port, in a thread, for the web tests."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class RunningServer:
    url: str
    root: Path  # the server's own temporary folder
    state: object  # web.app.Server
    _server: object
    _thread: threading.Thread

    def leftovers(self) -> list[Path]:
        """Files still in the server's temporary folder (jobs and unfetched results)."""
        return [p for p in self.root.rglob("*") if p.is_file()]

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Until no job runs and the job folders are gone (a cancel stops a worker at its next frame)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.state.pool.active == 0 and not any((self.root / "jobs").iterdir()):
                return
            time.sleep(0.05)
        raise AssertionError(f"server not idle: active={self.state.pool.active}, {list((self.root / 'jobs').iterdir())}")

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(anonymizer, temp_dir: Path, **config) -> RunningServer:
    import uvicorn

    from anonyface.web.app import create_app
    from anonyface.web.jobs import Models, ServerConfig

    app = create_app(ServerConfig(temp_dir=str(temp_dir), **config), Models.from_anonymizer(anonymizer))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    end = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > end or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    state = app.state.server
    return RunningServer(f"http://127.0.0.1:{port}", state.root, state, server, thread)

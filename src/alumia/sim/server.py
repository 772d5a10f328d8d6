"""Running the simulator: `run_sim` for the CLI, `SimServer` for tests (a real HTTP server in a thread)."""

import contextlib
import hashlib
import socket
import threading
import time
import urllib.request
from types import TracebackType
from typing import Any

import orjson
import uvicorn

from alumia.sim.app import create_sim_app
from alumia.sim.env import sim_base_url
from alumia.sim.held import HOLD_TIMEOUT_SECONDS

# Longer than the gateway keeps an idle upstream connection (60 s, `alumia.app`), as providers' edges
# are: with uvicorn's 5 s the simulator closed connections the gateway was about to reuse.
KEEP_ALIVE_SECONDS = 75


def run_sim(host: str, port: int) -> None:
    """Serve the simulator on host:port until interrupted."""
    # No access log: it would cost the baseline per-request work the gateway is compared against.
    uvicorn.run(create_sim_app(), host=host, port=port, log_level="warning", access_log=False,
                timeout_keep_alive=KEEP_ALIVE_SECONDS)


class SimServer:
    """The simulator on 127.0.0.1 and a free port, served from a background thread while in a `with`."""

    host = "127.0.0.1"

    def __init__(self, startup_timeout: float = 10.0, *, hold_timeout: float = HOLD_TIMEOUT_SECONDS) -> None:
        self._timeout = startup_timeout
        # Bound here and handed to uvicorn, so no other process can take the port between our choosing
        # it and uvicorn listening on it.
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((self.host, 0))
        self.port: int = self._sock.getsockname()[1]
        config = uvicorn.Config(create_sim_app(hold_timeout=hold_timeout), log_level="warning",
                                access_log=False, lifespan="off", timeout_keep_alive=KEEP_ALIVE_SECONDS)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name=f"alumia-sim-{self.port}", daemon=True)

    def base_url(self, provider: str) -> str:
        """The base URL a client uses for `provider` on this simulator."""
        return sim_base_url(self.host, self.port, provider)

    def _url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def calls(self) -> list[dict[str, Any]]:
        """The calls the simulator has received, oldest first."""
        with urllib.request.urlopen(self._url("/_sim/calls"), timeout=5) as response:
            calls: list[dict[str, Any]] = orjson.loads(response.read())["calls"]
            return calls

    def reset(self) -> None:
        """Forget the recorded calls."""
        request = urllib.request.Request(self._url("/_sim/calls"), method="DELETE")
        with urllib.request.urlopen(request, timeout=5):
            pass

    def revoke(self, key: str) -> None:
        """Make the simulator reject `key` from now on (only its SHA-256 is sent)."""
        body = orjson.dumps({"keySha256": hashlib.sha256(key.encode()).hexdigest()})
        request = urllib.request.Request(self._url("/_sim/revoke"), data=body, method="POST")
        with urllib.request.urlopen(request, timeout=5):
            pass

    def held(self) -> int:
        """How many ``[[sim:hold]]`` calls are waiting for a release now."""
        with urllib.request.urlopen(self._url("/_sim/held"), timeout=5) as response:
            return int(orjson.loads(response.read())["held"])

    def release(self) -> int:
        """Let every held call go on; the number released."""
        request = urllib.request.Request(self._url("/_sim/release"), data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(orjson.loads(response.read())["released"])

    def start(self) -> None:
        """Start serving and return once the simulator answers HTTP."""
        self._thread.start()
        deadline = time.monotonic() + self._timeout
        while True:
            if not self._thread.is_alive():
                raise RuntimeError("the simulator thread exited during startup")
            if self._server.started:
                try:
                    self.calls()
                    return
                except OSError:
                    pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"the simulator did not answer within {self._timeout} s")
            time.sleep(0.01)

    def stop(self) -> None:
        """Release any held call, stop serving and wait for the thread to finish."""
        if self._server.started:
            # A held call would keep uvicorn's graceful shutdown waiting until its safety timeout.
            with contextlib.suppress(OSError):
                self.release()
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=self._timeout)
        self._sock.close()

    def __enter__(self) -> "SimServer":
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

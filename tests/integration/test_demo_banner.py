"""The demo's banner is printed only once the server answers /healthz, so every address in it works."""

import http.server
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from alumia.demo import _print_when_ready


class _Healthy(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def serving(port: int) -> Iterator[None]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Healthy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


def test_the_banner_waits_for_the_server_to_answer(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as probe:  # a port nobody listens on, then a server on it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    stop = threading.Event()
    printer = threading.Thread(target=_print_when_ready,
                               args=(f"http://127.0.0.1:{port}/healthz", "BANNER", stop), daemon=True)
    printer.start()
    printer.join(0.5)
    assert printer.is_alive() and capsys.readouterr().out == ""  # nothing while nothing answers
    with serving(port):
        printer.join(10)
    assert not printer.is_alive()
    assert capsys.readouterr().out == "BANNER\n"


def test_the_banner_is_not_printed_after_the_server_stops_trying(capsys: pytest.CaptureFixture[str]) -> None:
    stop = threading.Event()
    stop.set()
    _print_when_ready("http://127.0.0.1:9/healthz", "BANNER", stop)
    assert capsys.readouterr().out == ""

"""An inherited listening socket gets Nagle's algorithm turned off for every connection it accepts."""

import socket

from alumia.listen import prepare_inherited


def test_connections_accepted_from_a_prepared_socket_have_nodelay() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        assert prepare_inherited(listener.fileno()) == listener.fileno()
        assert listener.fileno() != -1  # still open: uvicorn serves on it
        with socket.create_connection(listener.getsockname()):
            accepted, _ = listener.accept()
            with accepted:
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


def test_an_unprepared_socket_leaves_nagle_on() -> None:  # what the test above changes
    with socket.create_server(("127.0.0.1", 0)) as listener, socket.create_connection(listener.getsockname()):
        accepted, _ = listener.accept()
        with accepted:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0


def test_a_unix_socket_is_left_as_it_is(tmp_path: object) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(tmp_path) + "/s")  # type: ignore[operator]
        listener.listen()
        assert prepare_inherited(listener.fileno()) == listener.fileno()
        assert listener.fileno() != -1

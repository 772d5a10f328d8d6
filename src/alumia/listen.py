"""An inherited listening socket (`--fd`), made ready for uvicorn."""

import socket


def prepare_inherited(fd: int) -> int:
    """Turn Nagle's algorithm off on an inherited TCP listening socket; returns the same descriptor.

    uvicorn opens a `--fd` descriptor as a UNIX socket whatever it is, so uvloop never sets TCP_NODELAY
    on the connections it accepts from it. An answer written in two parts (headers, then body) then
    waits for the client's delayed ACK, up to 40 ms per answer. Accepted sockets inherit TCP_NODELAY
    from the listening socket (Linux, the BSDs), so setting it here covers every connection.
    """
    sock = socket.socket(fileno=fd)  # the kernel reports the real family
    try:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    finally:
        sock.detach()  # the descriptor stays open for uvicorn
    return fd

"""Reading a provider's answer with a cap, so that no upstream can make the gateway buffer without bound."""

import aiohttp

# An error body carries a message for people: the first 64 KiB say everything it has to say.
ERROR_BODY_BYTES = 64 * 1024


async def read_capped(response: aiohttp.ClientResponse, cap: int) -> bytes | None:
    """The whole body, or None as soon as it passes `cap` bytes (the rest is never read)."""
    if response.content_length is not None and response.content_length > cap:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > cap:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def read_error_body(response: aiohttp.ClientResponse) -> bytes:
    """At most the first ERROR_BODY_BYTES of an error body; what arrived if the provider stops sending."""
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in response.content.iter_any():
            chunks.append(chunk)
            size += len(chunk)
            if size >= ERROR_BODY_BYTES:
                break
    except (aiohttp.ClientError, TimeoutError):
        pass  # the error is reported with what was read
    return b"".join(chunks)[:ERROR_BODY_BYTES]

"""Reading `Authorization: Bearer <token>`, shared by the gateway and the management API."""

from starlette.datastructures import Headers


def bearer_token(headers: Headers) -> str | None:
    """The bearer token, or None when the header is absent or of another scheme."""
    header = headers.get("authorization", "")
    return header[7:].strip() if header[:7].lower() == "bearer " else None

"""Logging set-up: every handler redacts key-shaped text."""

import logging

from alumia.redact import RedactingFilter


def configure_logging(level: str = "INFO") -> None:
    """Log to stderr, with the redacting filter on the root handler and uvicorn's own handlers."""
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    redactor = RedactingFilter()
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access"):
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(redactor)

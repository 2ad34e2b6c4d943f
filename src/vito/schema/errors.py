"""The one error type of the schema."""

from __future__ import annotations

from vito.errors import VitoError


class SchemaError(VitoError, ValueError):
    """A file, mapping or command-line value does not fit its schema; the message names the key."""

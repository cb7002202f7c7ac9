"""Object ids in the shapes that Modal's clients check."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.digits + string.ascii_letters

# Modal's SDKs treat a sandbox id as V1 only when it is "sb-" followed by exactly
# 22 characters of [0-9A-Za-z]. Any other shape switches them to the V2 protocol.
ID_BODY_LENGTH = 22


def new_id(prefix: str) -> str:
    """Return a random id such as ``sb-nGEijt9WbBMlGrsPH9FOaC`` for ``prefix`` "sb"."""
    body = "".join(secrets.choice(_ALPHABET) for _ in range(ID_BODY_LENGTH))
    return f"{prefix}-{body}"

"""The one redactor: credentials never reach MLflow, messages, logs or state files.

``redact_uri`` drops the user and password of a URI (``http://u:p@host`` → ``http://host``);
``is_secret`` spots credential-looking keys and values; ``redact`` applies both to a (nested) dict.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlparse

SECRET_PATTERN = re.compile(
    r"(^aws_|aws_access|aws_secret|aws_session|token|password|passwd|secret|credential|api[_-]?key|private[_-]?key)",
    re.IGNORECASE,
)
AWS_KEY_ID = re.compile(r"\bA[SK]IA[0-9A-Z]{16}\b")


def redact_uri(text: str) -> str:
    """The URI without its user info (user, password or token); any other text unchanged."""
    parsed = urlparse(text)
    if not (parsed.scheme and parsed.netloc and "@" in parsed.netloc):
        return text
    host = parsed.netloc.rsplit("@", 1)[1]
    return parsed._replace(netloc=host).geturl()


def is_secret(key: str, value: Any = "") -> bool:
    """Keys or values that look like credentials (AWS_*, token, password, secret, keys)."""
    if SECRET_PATTERN.search(str(key)):
        return True
    return isinstance(value, str) and bool(SECRET_PATTERN.search(value) or AWS_KEY_ID.search(value))


def redact(params: dict[str, Any]) -> dict[str, Any]:
    """Drop secret-looking entries and credentials inside URIs; the rest unchanged."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if is_secret(key, value):
            continue
        if isinstance(value, dict):
            out[key] = redact(value)
            continue
        out[key] = redact_uri(value) if isinstance(value, str) else value
    return out

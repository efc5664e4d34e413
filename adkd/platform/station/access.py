"""Who may talk to the station: loopback only by default; elsewhere only holders of the access token.

The token arrives as ``Authorization: Bearer <token>``, as the ``adkd_station`` cookie, or once as
``?token=`` (the page then sets the cookie and drops it from the address). Every other request gets 401.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Any
from urllib.parse import parse_qsl, urlencode

from adkd.errors import ConfigError

COOKIE = "adkd_station"
TOKEN_ENV = "ADKD_STATION_TOKEN"
MIN_TOKEN_LENGTH = 16


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse a non-loopback bind without a usable token."""
    if is_loopback(host):
        return
    if not token:
        raise ConfigError(
            f"adkd station --host {host} is reachable from other machines and needs an access token: set "
            f"{TOKEN_ENV} (or station.token in adkd.toml) to a long random string, or bind 127.0.0.1"
        )
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(
            f"the station access token is {len(token)} characters; use at least {MIN_TOKEN_LENGTH} "
            "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(24))'`)"
        )


def _cookie(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"cookie":
            for part in value.decode("latin-1").split(";"):
                key, _, val = part.strip().partition("=")
                if key == COOKIE:
                    return val
    return None


class TokenGate:
    """ASGI middleware: 401 for every HTTP request that does not carry ``token``."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.token = token.encode()

    def _ok(self, candidate: str | None) -> bool:
        return candidate is not None and hmac.compare_digest(candidate.encode(), self.token)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers") or []
        auth = next((v.decode("latin-1") for k, v in headers if k == b"authorization"), "")
        bearer = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        if self._ok(bearer) or self._ok(_cookie(headers)):
            await self.app(scope, receive, send)
            return
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        given = next((v for k, v in query if k == "token"), None)
        if self._ok(given) and scope.get("method") == "GET":
            rest = urlencode([(k, v) for k, v in query if k != "token"])
            location = scope.get("path", "/") + (f"?{rest}" if rest else "")
            await _respond(
                send,
                303,
                b"",
                [
                    (b"location", location.encode()),
                    (b"set-cookie", f"{COOKIE}={given}; HttpOnly; SameSite=Strict; Path=/".encode()),
                ],
            )
            return
        body = (
            b"401 Unauthorized: this station needs its access token (Authorization: Bearer TOKEN, "
            b"or open /?token=TOKEN once in the browser)\n"
        )
        await _respond(send, 401, body, [(b"www-authenticate", b"Bearer")])


async def _respond(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    base = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": base + headers})
    await send({"type": "http.response.body", "body": body})

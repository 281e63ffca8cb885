"""Optional API keys: `Authorization: Bearer <key>`, compared in constant time.

Every route except /health and /metrics depends on `require_api_key`. With no keys
configured (DENSEKIT_API_KEYS empty) the dependency lets everything through.
"""

from __future__ import annotations

import hmac

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from densekit.service.errors import unauthorized

bearer = HTTPBearer(auto_error=False, description="an API key from DENSEKIT_API_KEYS (only when the server sets keys)")


def key_matches(given: str, keys: list[str]) -> bool:
    """True when `given` equals one of `keys`. Every key is compared, each in constant time,
    so the answer's timing says nothing about which key (or how much of one) matched."""
    g = given.encode("utf-8")
    ok = False
    for k in keys:
        ok |= hmac.compare_digest(g, k.encode("utf-8"))
    return ok


async def require_api_key(request: Request, creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
    keys = request.app.state.settings.api_keys
    if not keys:
        return
    if creds is None or not creds.credentials:
        raise unauthorized("missing API key: send the header 'Authorization: Bearer <key>'")
    if not key_matches(creds.credentials, keys):
        raise unauthorized("wrong API key")

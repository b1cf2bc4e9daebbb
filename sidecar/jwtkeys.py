"""The keys that verify bearer tokens, and the verification itself.

Keys come from ``identity.jwt``: a shared secret (HS*), a PEM public key file, a JWKS file, or a
JWKS URL. The URL's document is fetched with a timeout, cached, and fetched again only when a
token names a ``kid`` the cache does not hold, at most once a minute: a flood of tokens with made-up
key ids must not turn into a flood of requests to the identity provider.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import orjson

from .config import JwtConfig
from .errors import ConfigError

log = logging.getLogger(__name__)

# A JWKS URL is asked again for an unknown kid at most this often.
REFRESH_INTERVAL_S = 60.0
# Bound on a JWKS document; real ones are a few kilobytes.
MAX_JWKS_BYTES = 1024 * 1024


def _family(alg: str) -> str:
    """``HS``, ``RS``, ``PS``, ``ES`` or ``Ed``: a key verifies only tokens of its own family, so a
    public key can never be used as an HMAC secret (the classic algorithm confusion)."""
    return alg[:2]


class JwtKeys:
    """Every key the config names; ``verify`` checks a token against them synchronously, while
    ``refresh_for`` (async) fetches a JWKS URL's keys when a token needs one not yet known."""

    def __init__(self, cfg: JwtConfig) -> None:
        self.cfg = cfg
        self.algorithms = frozenset(a for a in cfg.algorithms if a.lower() != "none")
        self.secret = cfg.secret.encode() if cfg.secret else None
        self.pem: bytes | None = None
        if cfg.public_key_file:
            self.pem = _read(cfg.public_key_file, "identity.jwt.public_key_file")
        self.file_keys: list[jwt.PyJWK] = []
        if cfg.jwks_file:
            raw = _read(cfg.jwks_file, "identity.jwt.jwks_file")
            self.file_keys = _parse_jwks(raw, "identity.jwt.jwks_file")
        self.url_keys: list[jwt.PyJWK] = []
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()
        self._http: aiohttp.ClientSession | None = None

    # --- verification ------------------------------------------------------------------------

    def key_for(self, header: dict[str, Any]) -> Any | None:
        """The key that verifies a token with this (unverified) header, or None."""
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            return None
        kid = header.get("kid")
        usable = [
            k
            for k in (*self.file_keys, *self.url_keys)
            if _family(k.algorithm_name) == _family(alg)
        ]
        if kid is not None:
            for jwk in usable:
                if jwk.key_id == kid:
                    return jwk.key
        elif len(usable) == 1:
            # A token without a kid may use a set's key only when just one fits.
            return usable[0].key
        if _family(alg) == "HS":
            return self.secret
        return self.pem

    def verify(self, token: str) -> dict[str, Any] | None:
        """The token's claims when its signature, ``exp``/``nbf`` and the configured ``aud``/``iss``
        hold; None otherwise (why is logged at DEBUG: a client's bad token is not our problem)."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return None
        key = self.key_for(header)
        if key is None:
            log.debug("no key for a token with alg %r kid %r", header.get("alg"), header.get("kid"))
            return None
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[header["alg"]],
                audience=self.cfg.audience or None,
                issuer=self.cfg.issuer or None,
                options={"verify_aud": bool(self.cfg.audience)},
            )
        except (jwt.PyJWTError, ValueError, TypeError) as e:
            log.debug("token refused: %s", e)
            return None
        return claims

    # --- the JWKS URL ------------------------------------------------------------------------

    def unverified_header(self, token: str) -> dict[str, Any] | None:
        try:
            return jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return None

    async def refresh_for(self, token: str) -> None:
        """Fetch the JWKS URL when ``token`` names a key not held yet (at most once a minute)."""
        if not self.cfg.jwks_url:
            return
        header = self.unverified_header(token)
        if header is None or not self._wants_url_key(header):
            return
        async with self._lock:
            if not self._wants_url_key(header):
                return  # another request fetched it meanwhile
            now = time.monotonic()
            if self._fetched_at is not None and now - self._fetched_at < REFRESH_INTERVAL_S:
                return
            self._fetched_at = now
            await self._fetch()

    def _wants_url_key(self, header: dict[str, Any]) -> bool:
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            return False  # no key would make it valid: nothing to fetch
        kid = header.get("kid")
        if kid is None:
            return not self.url_keys
        return not any(k.key_id == kid for k in (*self.file_keys, *self.url_keys))

    async def _fetch(self) -> None:
        if self._http is None:
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.cfg.jwks_timeout_s)
            )
        url = self.cfg.jwks_url
        try:
            async with self._http.get(url, allow_redirects=False) as resp:
                if resp.status != 200:
                    log.warning("JWKS %s answered %d; keeping the keys held", url, resp.status)
                    return
                raw = await resp.content.read(MAX_JWKS_BYTES + 1)
        except (aiohttp.ClientError, TimeoutError) as e:
            log.warning("JWKS %s not fetched (%s); keeping the keys held", url, type(e).__name__)
            return
        try:
            keys = _parse_jwks(raw, url)
        except ConfigError as e:
            log.warning("%s; keeping the keys held", e)
            return
        self.url_keys = keys
        log.info("JWKS %s: %d key(s)", url, len(keys))

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None


def _read(path: str, key: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"config error: {key}: cannot read {path}: {e.strerror}") from e


def _parse_jwks(raw: bytes, where: str) -> list[jwt.PyJWK]:
    if len(raw) > MAX_JWKS_BYTES:
        raise ConfigError(f"JWKS {where}: larger than {MAX_JWKS_BYTES} bytes")
    try:
        data = orjson.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return list(jwt.PyJWKSet.from_dict(data))
    except (orjson.JSONDecodeError, ValueError, jwt.PyJWTError) as e:
        raise ConfigError(f"JWKS {where}: not a usable key set: {e}") from e

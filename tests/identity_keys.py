"""Keys and tokens for identity tests: RSA/EC key pairs, JWKS documents, signed JWTs."""

from __future__ import annotations

import time
from typing import Any

import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

HS_SECRET = "a-shared-hs256-secret-of-32-bytes!!"


class KeyPair:
    """A private key to sign with and its public half as PEM and as a JWK (with ``kid``)."""

    def __init__(self, kid: str, kind: str = "RSA") -> None:
        self.kid = kid
        if kind == "RSA":
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.alg = "RS256"
            self.jwk: dict[str, Any] = orjson.loads(RSAAlgorithm.to_jwk(self.private.public_key()))
        else:
            self.private = ec.generate_private_key(ec.SECP256R1())
            self.alg = "ES256"
            self.jwk = orjson.loads(ECAlgorithm.to_jwk(self.private.public_key()))
        self.jwk.update(kid=kid, alg=self.alg, use="sig")
        self.public_pem = self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def token(self, claims: dict[str, Any], *, kid: str | None = "", **header: Any) -> str:
        """``claims`` signed with this key; ``kid`` defaults to this key's (None: no kid)."""
        headers = dict(header)
        if kid is not None:
            headers["kid"] = kid or self.kid
        return jwt.encode(claims, self.private, algorithm=self.alg, headers=headers)


def jwks(*pairs: KeyPair) -> bytes:
    return orjson.dumps({"keys": [p.jwk for p in pairs]})


def claims(
    sub: str | None, tenant: str | None = "acme", ttl_s: int = 600, **more: Any
) -> dict[str, Any]:
    now = int(time.time())
    out: dict[str, Any] = {"iat": now, "exp": now + ttl_s, **more}
    if sub is not None:
        out["sub"] = sub
    if tenant is not None:
        out["tenant_id"] = tenant
    return out


def hs_token(body: dict[str, Any], secret: str = HS_SECRET) -> str:
    return jwt.encode(body, secret, algorithm="HS256")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}

"""Keys and tokens for the identity modes (FLASHSALE_AUTH=jwt), made here with `cryptography`
and PyJWT."""

from __future__ import annotations

import time
from functools import cache
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

SECRET = "an HS256 secret of at least thirty-two bytes"
AUDIENCE = "flashsale"


def pem(public_key: Any) -> str:
    """A public key as FLASHSALE_JWT_KEY takes it."""
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


@cache
def jwt_keys() -> dict[str, tuple[Any, str, str]]:
    """kind -> (signing key, FLASHSALE_JWT_KEY, algorithm); made once per test run."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    return {
        "HS256": (SECRET, SECRET, "HS256"),
        "RS256": (rsa_key, pem(rsa_key.public_key()), "RS256"),
        "ES256": (ec_key, pem(ec_key.public_key()), "ES256"),
    }


def token(signing_key: Any, algorithm: str, **claims: Any) -> str:
    """A token for user `sub`, valid for a minute unless the claims say otherwise (None drops
    a claim)."""
    body = {"sub": "alice", "exp": int(time.time()) + 60, **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, signing_key, algorithm)


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}

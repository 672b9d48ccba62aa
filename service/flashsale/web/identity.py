"""The HTTP side of identity (FLASHSALE_AUTH): who a request says it acts for, read from the
gateway's trusted header or verified from a bearer JWT. Nothing is refused here: the service
applies the API's rules to what this finds, in the error table's order."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import falcon
import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from flashsale.config import ConfigError, Settings
from flashsale.domain import valid_token

# RFC 6750 section 3: a request without a token hears the bare challenge, a bad token also
# hears error="invalid_token". The descriptions are fixed text (no quotes to escape).
_CHALLENGE = 'Bearer realm="flashsale"'
_INVALID = _CHALLENGE + ', error="invalid_token", error_description="{}"'
_EXPIRED = _INVALID.format("The token expired")
_REFUSED = _INVALID.format("The token is not valid")
_BAD_SUBJECT = _INVALID.format("The token's sub is not a valid user_id")

# The shortest HS256 secret RFC 7518 (3.2) allows, and the smallest RSA key worth trusting.
_MIN_SECRET_BYTES = 32
_MIN_RSA_BITS = 2048


class Identity(NamedTuple):
    """The user a request authenticates as; None when it carries no valid identity, then with
    the WWW-Authenticate challenge its 401 carries (jwt only)."""

    user: str | None
    challenge: str | None = None


Reader = Callable[[falcon.Request], Identity]


def identity_reader(settings: Settings) -> Reader | None:
    """How this service reads identities; None when FLASHSALE_AUTH is off."""
    if settings.auth == "header":
        return TrustedHeader(settings.auth_header)
    if settings.auth == "jwt":
        return BearerTokens(settings)
    return None


class TrustedHeader:
    """`header`: the gateway in front authenticated the caller and set this header (and strips
    it from what clients send)."""

    def __init__(self, name: str):
        self._name = name

    def __call__(self, req: falcon.Request) -> Identity:
        # A repeated header arrives joined by "," and so is no valid user_id either.
        value = req.get_header(self._name)
        return Identity(value if valid_token(value) else None)


class BearerTokens:
    """`jwt`: `Authorization: Bearer <token>`, signed with FLASHSALE_JWT_KEY, `exp` required and
    checked, `aud` / `iss` when configured; its `sub` is the user."""

    def __init__(self, settings: Settings):
        self._key, algorithm = verification_key(settings.jwt_key)
        # One algorithm, chosen by the key: never HS256 with a PEM key (algorithm confusion),
        # never "none".
        self._algorithms = [algorithm]
        self._audience = settings.jwt_audience or None
        self._issuer = settings.jwt_issuer or None
        required = ["exp", "sub"]
        required += ["aud"] if self._audience else []
        required += ["iss"] if self._issuer else []
        # Without a configured audience a token's `aud` is not looked at (PyJWT would refuse
        # any token that has one). `iat` says nothing about validity: an issuer's clock a second
        # ahead of ours must not refuse its fresh tokens (`nbf`, when present, is checked).
        self._options: Any = {
            "require": required,
            "verify_aud": self._audience is not None,
            "verify_iat": False,
        }

    def __call__(self, req: falcon.Request) -> Identity:
        scheme, _, token = (req.get_header("Authorization") or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return Identity(None, _CHALLENGE)
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                options=self._options,
            )
        except jwt.ExpiredSignatureError:
            return Identity(None, _EXPIRED)
        except (jwt.PyJWTError, ValueError, TypeError):  # whatever a forged token trips on
            return Identity(None, _REFUSED)
        subject = claims.get("sub")
        if not valid_token(subject):
            return Identity(None, _BAD_SUBJECT)
        return Identity(subject)


def verification_key(text: str) -> tuple[Any, str]:
    """FLASHSALE_JWT_KEY as PyJWT takes it, and the one algorithm it verifies: a PEM public key
    is RS256 (RSA) or ES256 (EC P-256), anything else is an HS256 shared secret."""
    if not text.startswith("-----BEGIN"):
        if len(text.encode()) < _MIN_SECRET_BYTES:
            raise ConfigError(
                f"FLASHSALE_JWT_KEY: an HS256 secret needs at least {_MIN_SECRET_BYTES} bytes"
            )
        return text, "HS256"
    try:
        key = serialization.load_pem_public_key(text.encode())
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(
            "FLASHSALE_JWT_KEY: not a PEM public key (a private key or certificate is not one)"
        ) from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < _MIN_RSA_BITS:
            raise ConfigError(f"FLASHSALE_JWT_KEY: an RSA key needs at least {_MIN_RSA_BITS} bits")
        return key, "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key, "ES256"
    raise ConfigError("FLASHSALE_JWT_KEY: a PEM public key must be RSA (RS256) or EC P-256 (ES256)")

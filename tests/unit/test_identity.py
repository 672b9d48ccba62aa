"""The key of FLASHSALE_AUTH=jwt: an unusable one is refused at start, naming the setting, and
each usable key chooses its one algorithm."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from flashsale.config import ConfigError
from flashsale.web.identity import verification_key
from tests.support.identity import jwt_keys, pem


@pytest.mark.parametrize(
    "key",
    [
        "short secret",
        "-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----",
        "private RSA",
        "RSA 1024",
        "EC P-384",
    ],
)
def test_unusable_keys_are_refused_at_start(key: str) -> None:
    made = {
        "private RSA": lambda: (
            rsa.generate_private_key(65537, 2048)
            .private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            .decode()
        ),
        "RSA 1024": lambda: pem(rsa.generate_private_key(65537, 1024).public_key()),
        "EC P-384": lambda: pem(ec.generate_private_key(ec.SECP384R1()).public_key()),
    }
    with pytest.raises(ConfigError, match="FLASHSALE_JWT_KEY"):
        verification_key(made[key]() if key in made else key)


def test_keys_choose_their_one_algorithm() -> None:
    assert [verification_key(configured)[1] for _, configured, _ in jwt_keys().values()] == [
        "HS256",
        "RS256",
        "ES256",
    ]

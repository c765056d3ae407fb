"""TokenVerifier in process: the static RS256 / ES256 public key option (kept beside the JWKS),
iss / aud, algorithm confusion, and the tokens this process mints carrying iss / aud."""

from __future__ import annotations

import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from roomstream_kit.auth import AuthError, TokenVerifier, service_token
from roomstream_kit.settings import CommonSettings


def _pem(key: ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def test_static_es256_public_key_with_issuer_and_audience() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    settings = CommonSettings(
        jwt_algorithm="ES256", jwt_public_key=_pem(key), jwt_issuer="iss-a", jwt_audience="aud-a"
    )
    verifier = TokenVerifier(settings)
    now = time.time()
    good = {"sub": "u", "exp": now + 60.5, "iat": now, "iss": "iss-a", "aud": ["x", "aud-a"]}
    assert verifier.verify(jwt.encode(good, key, algorithm="ES256")).sub == "u"
    for bad in ({**good, "iss": "iss-b"}, {**good, "aud": "aud-b"}, {"sub": "u", "exp": now + 60}):
        with pytest.raises(AuthError):
            verifier.verify(jwt.encode(bad, key, algorithm="ES256"))
    # Algorithm confusion: an HS256 token "signed" with the public key as the secret.
    with pytest.raises(AuthError):
        verifier.verify(jwt.encode(good, "x" * 64, algorithm="HS256"))


def test_minted_service_tokens_carry_issuer_and_audience() -> None:
    settings = CommonSettings(jwt_secret="s" * 32, jwt_issuer="iss-a", jwt_audience="aud-a")
    claims = TokenVerifier(settings).verify(service_token(settings))
    assert claims.is_service
    with pytest.raises(ValueError, match="SERVICE_TOKEN"):
        service_token(CommonSettings(jwks_url="http://127.0.0.1:9/jwks.json"))

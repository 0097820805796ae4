"""The ``gateway-jwt`` row's credentials: a fresh ES256 key, its JWKS and a signed token."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

ISSUER = "https://auth.bench.invalid"
AUDIENCE = "event-gateway-bench"
KID = "bench-1"


@dataclass(frozen=True)
class Credentials:
    jwks: str  # the JWKS document (written to the source's jwks_file)
    token: str  # a JWT valid for a day


def credentials() -> Credentials:
    """A new key pair; the token the wrk script sends and the JWKS the gateway checks it by."""
    key = ec.generate_private_key(ec.SECP256R1())
    public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    now = int(time.time())
    token = jwt.encode(
        {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 86400},
        key,
        algorithm="ES256",
        headers={"kid": KID},
    )
    return Credentials(json.dumps({"keys": [{**public, "kid": KID, "use": "sig"}]}), token)


def source_config(jwks_file: str) -> list[str]:
    """The ``[[sources]]`` lines of the jwt source."""
    return [
        "[[sources]]",
        'name = "camara-jwt"',
        'adapter = "camara"',
        'auth = "jwt"',
        f"jwks_file = {json.dumps(jwks_file)}",
        f"issuer = {json.dumps(ISSUER)}",
        f"audience = [{json.dumps(AUDIENCE)}]",
        "",
    ]

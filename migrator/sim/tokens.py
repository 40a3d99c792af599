"""Signed access tokens, as Entra and the managed-identity endpoint issue them.

The simulator signs RS256 JWTs with a key made at start-up and checks them on every ARM and
Graph request, so a forged, expired or wrong-audience token is refused as Azure would refuse it.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

TOKEN_LIFETIME = 3600


@dataclass(frozen=True)
class Caller:
    """Who sent a request, as its verified token says."""

    object_id: str
    app_id: str
    audience: str
    roles: tuple[str, ...]


class TokenError(Exception):
    """A missing, malformed, expired or mis-addressed bearer token."""


class TokenIssuer:
    def __init__(self, tenant_id: str) -> None:
        self.tenant_id = tenant_id
        self.kid = uuid.uuid4().hex
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.issuer = f"https://sts.windows.net/{tenant_id}/"

    def issue(self, *, object_id: str, app_id: str, audience: str, roles: list[str],
              extra: dict[str, str] | None = None) -> tuple[str, int]:
        now = int(time.time())
        claims: dict[str, object] = {
            "aud": audience, "iss": self.issuer, "iat": now, "nbf": now,
            "exp": now + TOKEN_LIFETIME, "tid": self.tenant_id, "oid": object_id,
            "sub": object_id, "appid": app_id, "azp": app_id, "idtyp": "app",
            "ver": "1.0", "uti": uuid.uuid4().hex,
        }
        if roles:
            claims["roles"] = roles
        claims.update(extra or {})
        token = jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.kid})
        return token, now + TOKEN_LIFETIME

    def verify(self, authorization: str | None, audiences: tuple[str, ...]) -> Caller:
        if not authorization or not authorization.lower().startswith("bearer "):
            raise TokenError("Authentication failed. The 'Authorization' header is missing.")
        token = authorization[7:].strip()
        try:
            claims = jwt.decode(
                token, self._key.public_key(), algorithms=["RS256"], audience=list(audiences),
                issuer=self.issuer, options={"require": ["exp", "aud", "oid"]}, leeway=30,
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("The access token has expired.") from None
        except jwt.InvalidAudienceError:
            raise TokenError("The access token has an invalid audience for this service.") from None
        except jwt.PyJWTError:
            raise TokenError("The access token is invalid.") from None
        return Caller(str(claims["oid"]), str(claims.get("appid", "")), str(claims["aud"]),
                      tuple(claims.get("roles", ())))

    def public_jwk(self) -> dict[str, object]:
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self._key.public_key(), as_dict=True)
        jwk.update({"kid": self.kid, "use": "sig", "alg": "RS256"})
        return dict(jwk)

"""Who the operator is signed in as: the tenant and object id in its own ARM token.

A plan belongs to one tenant (apply refuses another), and the scan asks whether the operator
itself may write where a rollback will need to write (a Key Vault secret): both need to know
who is signed in. The token is the operator's own and is decoded, not verified: it says which
identity is making the calls, it grants nothing.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

from azure.core.exceptions import (
    ClientAuthenticationError,
    ServiceRequestError,
    ServiceResponseError,
)

from migrator.cloud.factory import ClientFactory


@dataclass(frozen=True)
class SignedIn:
    tenant_id: str | None
    object_id: str | None  # the operator's principal (service principal or user) object id


def _claims(token: str) -> dict[str, object]:
    """The payload of a JWT access token, read without verifying it ({} if not a JWT)."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, UnicodeError):
        return {}
    return payload if isinstance(payload, dict) else {}


def token_claim(token: str, claim: str) -> str | None:
    """One string claim of a JWT access token (None if the token is not a JWT or has no such
    claim)."""
    value = _claims(token).get(claim)
    return value if isinstance(value, str) and value else None


def _token(factory: ClientFactory, scope: str) -> str:
    """The operator's access token for `scope`, as the factory's clients get it; a refusal
    or an outage as the project's SignInError or transient AzureCallError."""
    from migrator.cloud.web import connection_error, sign_in_error

    try:
        return factory.credential.get_token(scope).token
    except ClientAuthenticationError as exc:
        raise sign_in_error(None, exc) from None
    except (ServiceRequestError, ServiceResponseError) as exc:
        # A managed identity's token endpoint that cut the connection: azure-identity lets
        # azure-core's error through (probed with migrator.sim's msi:drop).
        raise connection_error("sign in", exc) from None


def signed_in(factory: ClientFactory) -> SignedIn:
    """The operator's tenant and object id, from the ARM token the factory's clients use."""
    token = _token(factory, factory.profile.arm_scope)
    return SignedIn(token_claim(token, "tid"), token_claim(token, "oid"))


def token_roles(token: str) -> frozenset[str] | None:
    """The `roles` claim of an access token (application permissions, for an app-only
    token), or None when it has none: a user's delegated token carries `scp` instead."""
    roles = _claims(token).get("roles")
    if not isinstance(roles, list):
        return None
    return frozenset(str(r) for r in roles)


def graph_roles(factory: ClientFactory) -> frozenset[str] | None:
    """The Graph application permissions the operator's Graph token holds (see token_roles)."""
    return token_roles(_token(factory, factory.profile.graph_scope))

"""Entra ID's token endpoints and the App Service managed-identity endpoint.

MSAL (inside azure-identity) discovers `/{tenant}/v2.0/.well-known/openid-configuration` and
posts client credentials to `/{tenant}/oauth2/v2.0/token`; code in a site calls
`$IDENTITY_ENDPOINT?resource=…&api-version=2019-08-01` with `X-IDENTITY-HEADER`. Both hand out
tokens signed by the simulator, carrying the principal's object id and its Graph app roles.

Sign-in logs: every client-credentials attempt, refused or not, is logged (Tenant.sign_ins)
with the request's client address and the resource its `scope` names; every token the
managed-identity endpoint hands out is logged as a managed-identity sign-in.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from migrator.sim.context import (
    ARM_AUDIENCES,
    GRAPH_AUDIENCES,
    LOG_ANALYTICS_AUDIENCES,
    SimContext,
)
from migrator.sim.signins import resource_for_audience
from migrator.sim.state import AutomationAccount, ServicePrincipal, SimError, Tenant, WebApp

MI_API_VERSION = "2019-08-01"


def _aad_error(err: SimError, tenant: Tenant) -> Response:
    code = int(err.message.split(":")[0].removeprefix("AADSTS") or 0) if \
        err.message.startswith("AADSTS") else 0
    now = datetime.now(timezone.utc)
    body = {
        "error": err.code,
        "error_description": f"{err.message} Trace ID: {uuid.uuid4()} Correlation ID: "
                             f"{uuid.uuid4()} Timestamp: {now:%Y-%m-%d %H:%M:%SZ}",
        "error_codes": [code] if code else [],
        "timestamp": f"{now:%Y-%m-%d %H:%M:%SZ}",
        "trace_id": str(uuid.uuid4()), "correlation_id": str(uuid.uuid4()),
    }
    return JSONResponse(body, status_code=err.status)


def resource_from_scope(scope: str) -> str:
    """`https://management.azure.com/.default` -> `https://management.azure.com/`."""
    first = scope.split(maxsplit=1)[0] if scope.split() else ""
    return first.removesuffix(".default") or first


# Data-plane audiences app code asks tokens for (Key Vault, Storage, SQL, messaging, Cosmos DB).
DATA_AUDIENCES = frozenset({
    "https://vault.azure.net", "https://storage.azure.com", "https://database.windows.net",
    "https://servicebus.azure.net", "https://eventhubs.azure.net", "https://cosmos.azure.com",
    "https://ossrdbms-aad.database.windows.net", "https://cognitiveservices.azure.com",
})


def audience_known(resource: str) -> bool:
    bare = resource.rstrip("/")
    known = (*ARM_AUDIENCES, *GRAPH_AUDIENCES, *LOG_ANALYTICS_AUDIENCES)
    return bare in {a.rstrip("/") for a in known} or bare in DATA_AUDIENCES


def issue_for(ctx: SimContext, sp: ServicePrincipal, resource: str) -> tuple[str, int]:
    is_graph = resource.rstrip("/") in {a.rstrip("/") for a in GRAPH_AUDIENCES}
    roles = ctx.tenant.graph_roles_of(sp.object_id) if is_graph else []
    extra = {"xms_mirid": sp.alternative_names[-1]} if sp.kind == "ManagedIdentity" else None
    return ctx.issuer.issue(object_id=sp.object_id, app_id=sp.app_id, audience=resource,
                            roles=roles, extra=extra)


def routes(ctx: SimContext) -> list[BaseRoute]:
    tenant = ctx.tenant

    def _check_tenant(request: Request) -> None:
        tid = request.path_params["tenant"].lower()
        if tid not in (tenant.id.lower(), tenant.domain.lower(), "organizations"):
            raise SimError(400, "invalid_request", (
                f"AADSTS90002: Tenant '{tid}' not found. Check to make sure you have the correct "
                "tenant ID and are signing into the correct cloud."))

    async def openid(request: Request) -> Response:
        try:
            _check_tenant(request)
        except SimError as err:
            return _aad_error(err, tenant)
        base = f"{ctx.authority}/{tenant.id}"
        return JSONResponse({
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "issuer": f"{base}/v2.0",
            "jwks_uri": f"{ctx.authority}/{tenant.id}/discovery/v2.0/keys",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt",
                                                      "client_secret_basic"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
        })

    async def jwks(request: Request) -> Response:
        return JSONResponse({"keys": [ctx.issuer.public_jwk()]})

    async def token(request: Request) -> Response:
        form = parse_qs((await request.body()).decode())

        def one(name: str) -> str:
            return form.get(name, [""])[0]

        try:
            _check_tenant(request)
            if one("grant_type") != "client_credentials":
                raise SimError(400, "unsupported_grant_type", (
                    "AADSTS70003: The app requested an unsupported grant type "
                    f"'{one('grant_type')}'. The simulator supports client_credentials."))
            client_id, secret = one("client_id"), one("client_secret")
            if not secret:
                raise SimError(401, "invalid_client", (
                    "AADSTS7000216: 'client_assertion', 'client_secret' or 'request' is required "
                    "for the 'client_credentials' grant type."))
            resource = resource_from_scope(one("scope"))
            if not audience_known(resource):
                raise SimError(400, "invalid_resource", (
                    f"AADSTS500011: The resource principal named {resource} was not found in the "
                    f"tenant named {tenant.domain}."))
            with tenant.lock:
                sp = tenant.check_client_secret(
                    client_id, secret, ip=request.client.host if request.client else "",
                    resource=resource_for_audience(resource))
                access_token, _ = issue_for(ctx, sp, resource)
        except SimError as err:
            return _aad_error(err, tenant)
        return JSONResponse({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
                             "access_token": access_token})

    async def msi_token(request: Request) -> Response:
        """App Service / Automation protocol, api-version 2019-08-01."""
        q = request.query_params
        header = request.headers.get("x-identity-header", "")
        if q.get("api-version") != MI_API_VERSION:
            return JSONResponse({"statusCode": 400, "message": (
                f"The api-version '{q.get('api-version')}' could not be found. "
                f"Supported: {MI_API_VERSION}.")}, status_code=400)
        with tenant.lock:
            host = tenant.identity_host(header)
            if host is None:
                return JSONResponse({"statusCode": 401, "message": (
                    "The X-IDENTITY-HEADER is missing or does not belong to any resource.")},
                    status_code=401)
            resource = q.get("resource", "")
            if not audience_known(resource):
                return JSONResponse({"statusCode": 400, "message": (
                    f"AADSTS500011: The resource principal named {resource} was not found.")},
                    status_code=400)
            try:
                sp = select_identity(tenant, host, client_id=q.get("client_id"),
                                     principal_id=q.get("principal_id") or q.get("object_id"),
                                     resource_id=q.get("mi_res_id"))
            except SimError as err:
                return JSONResponse({"statusCode": err.status, "message": err.message},
                                    status_code=err.status)
            access_token, expires_on = issue_for(ctx, sp, resource)
            # Entra sees the request from the resource's own outbound address.
            ip = host.outbound_ips[0] if isinstance(host, WebApp) else (
                request.client.host if request.client else "")
            tenant.record_managed_identity_sign_in(
                sp, ip=ip, resource=resource_for_audience(resource), host_id=host.id)
        return JSONResponse({
            "access_token": access_token, "expires_on": str(expires_on), "resource": resource,
            "token_type": "Bearer", "client_id": sp.app_id,
        })

    return [
        Route("/{tenant}/v2.0/.well-known/openid-configuration", openid),
        Route("/{tenant}/.well-known/openid-configuration", openid),
        Route("/{tenant}/discovery/v2.0/keys", jwks),
        Route("/{tenant}/oauth2/v2.0/token", token, methods=["POST"]),
        Route("/msi/token", msi_token),
    ]


def select_identity(tenant: Tenant, host: WebApp | AutomationAccount, *,
                    client_id: str | None = None,
                    principal_id: str | None = None,
                    resource_id: str | None = None) -> ServicePrincipal:
    """Which of a resource's managed identities a token request gets, as App Service decides:
    a user-assigned one when selected by client id, principal id or resource id, else the
    system-assigned one. An unknown selection is an error, not a silent fall-back."""
    selected = [v for v in (client_id, principal_id, resource_id) if v]
    if len(selected) > 1:
        raise SimError(400, "invalid_request", "Only one of client_id, principal_id, mi_res_id.")
    if selected:
        for rid in host.identity.user_assigned:
            uai = tenant.identities.get(rid.lower())
            held = host.identity.held(rid, uai)
            if held is None:
                continue
            if (client_id and held[1] == client_id.lower()) or (
                principal_id and held[0] == principal_id.lower()) or (
                    resource_id and rid.lower() == resource_id.lower()):
                sp = tenant.service_principals.get(held[0])
                if uai is None or sp is None or held[0] != uai.principal_id:
                    # Deleted (or deleted and made anew) since it was assigned.
                    raise SimError(400, "invalid_request", (
                        f"The user-assigned identity {rid} assigned to {host.display} does "
                        "not exist."))
                return _usable(tenant, sp)
        if principal_id and host.identity.system_principal_id == principal_id.lower():
            return _usable(tenant, tenant.service_principals[principal_id.lower()])
        raise SimError(400, "invalid_request", (
            f"No user-assigned identity with {selected[0]!r} is assigned to {host.display}."))
    if not host.identity.system_principal_id:
        raise SimError(400, "invalid_request", (
            f"No managed identity is enabled on {host.display}."))
    return _usable(tenant, tenant.service_principals[host.identity.system_principal_id])


def _usable(tenant: Tenant, sp: ServicePrincipal) -> ServicePrincipal:
    if not tenant.is_visible(sp):
        wait = max(0.0, sp.visible_at - time.monotonic())
        raise SimError(400, "invalid_request", (
            f"AADSTS700016: Identity not found; it is still replicating (about {wait:.0f}s)."))
    return sp

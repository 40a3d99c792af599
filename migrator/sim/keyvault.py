"""Key Vault's data plane for secrets, one origin per vault, as azure-keyvault-secrets sees it.

A vault's URL is `https://{name}.vault.azure.net/` in Azure; here each vault gets its own port on
127.0.0.1 (`SimContext.vault_urls`, which ARM reports as the vault's `vaultUri`), because the SDK
reads a secret's id back as `https://<origin>/secrets/<name>/<version>` and refuses a path
prefix. What the SDK and Key Vault do, modelled here (Key Vault REST 7.x, and the responses in
the Azure SDK's public recordings of `SecretClient`):

- challenge authentication: a request without a bearer token gets 401 with
  `WWW-Authenticate: Bearer authorization="<authority>/<tenant>", resource="https://vault.azure.net"`
  and `{"error": {"code": "Unauthorized", "message": "AKV10000: Request is missing a Bearer or
  PoP token."}}`; the SDK then asks Entra for a token of that resource and sends again;
- `api-version` is required;
- authorization by access policy (permission names case-insensitive: `set`, `get`), or by Azure
  RBAC data actions on an RBAC vault (`.../secrets/setSecret/action`, `.../getSecret/action`),
  403 `Forbidden` with inner error `AccessDenied` or `ForbiddenByRbac` otherwise;
- `PUT /secrets/{name}` makes a new version; `GET /secrets/{name}[/{version}]` reads one;
  404 `SecretNotFound` for what does not exist.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from migrator.sim.context import SimContext, request_id
from migrator.sim.state import KeyVault, SecretVersion
from migrator.sim.tokens import Caller, TokenError

AUDIENCES = ("https://vault.azure.net", "https://vault.azure.net/")
_SECRETS_ACTION = "Microsoft.KeyVault/vaults/secrets"


def _error(status: int, code: str, message: str, inner: str | None = None,
           headers: dict[str, str] | None = None) -> Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if inner:
        body["innererror"] = {"code": inner}
    return JSONResponse({"error": body}, status_code=status,
                        headers={"x-ms-request-id": request_id(), **(headers or {})})


def vault_app(ctx: SimContext) -> Starlette:
    """The data plane of every vault; which vault a request is for is the port it came to."""
    tenant = ctx.tenant

    def challenge(message: str) -> Response:
        header = (f'Bearer authorization="{ctx.authority}/{tenant.id}", '
                  f'resource="{AUDIENCES[0]}"')
        return _error(401, "Unauthorized", message, headers={"WWW-Authenticate": header})

    def vault_of(request: Request) -> KeyVault | None:
        server = request.scope.get("server") or ("", 0)
        name = ctx.vault_ports.get(int(server[1]))
        return tenant.vaults.get(name) if name else None

    def caller_of(request: Request) -> Caller | Response:
        authorization = request.headers.get("authorization")
        if not authorization:
            return challenge("AKV10000: Request is missing a Bearer or PoP token.")
        try:
            return ctx.issuer.verify(authorization, AUDIENCES)
        except TokenError as exc:
            return challenge(f"AKV10022: {exc}")

    def allowed(caller: Caller, kv: KeyVault, permission: str, action: str,
                secret: str) -> Response | None:
        who = f"appid={caller.app_id};oid={caller.object_id};iss={ctx.issuer.issuer}"
        if kv.rbac:
            if tenant.can(caller.object_id, f"{_SECRETS_ACTION}/{action}",
                          f"{kv.id}/secrets/{secret}", data=True):
                return None
            return _error(403, "Forbidden", f"Caller is not authorized to perform action on "
                          f"resource. If role assignments, deny assignments or role "
                          f"definitions were changed recently, please observe propagation "
                          f"time. Caller: {who}. Action: '{_SECRETS_ACTION}/{action}'. "
                          f"Resource: '{kv.id.lower()}/secrets/{secret}'.", "ForbiddenByRbac")
        policy = next((p for p in kv.access_policies
                       if p.object_id.lower() == caller.object_id.lower()), None)
        if policy is not None and permission in {s.lower() for s in policy.secrets}:
            return None
        return _error(403, "Forbidden", f"The user, group or application '{who}' does not have "
                      f"secrets {permission} permission on key vault '{kv.name};location="
                      f"{kv.location}'. For help resolving this issue, please see "
                      "https://go.microsoft.com/fwlink/?linkid=2125287", "AccessDenied")

    def bundle(request: Request, name: str, v: SecretVersion, *, value: bool) -> Response:
        origin = f"{request.url.scheme}://{request.url.netloc}"
        created = int(v.created.timestamp())
        body: dict[str, Any] = {
            "id": f"{origin}/secrets/{name}/{v.version}",
            "attributes": {"enabled": v.enabled, "created": created, "updated": created,
                           "recoveryLevel": "Recoverable+Purgeable", "recoverableDays": 90},
            "tags": dict(v.tags)}
        if value:
            body["value"] = v.value
        if v.content_type:
            body["contentType"] = v.content_type
        return JSONResponse(body, headers={"x-ms-request-id": request_id(),
                                           "x-ms-keyvault-service-version": "1.9.sim"})

    async def secret(request: Request) -> Response:
        kv = vault_of(request)
        if kv is None:
            return _error(404, "VaultNotFound", "No vault listens on this address.")
        if not request.query_params.get("api-version"):
            return _error(400, "BadParameter", "The request URI contains an invalid API "
                          "version, or none: add api-version=7.5")
        caller = caller_of(request)
        if isinstance(caller, Response):
            return caller
        name = request.path_params["name"]
        version = request.path_params.get("version") or None
        with tenant.lock:
            if request.method == "PUT":
                refused = allowed(caller, kv, "set", "setSecret/action", name)
                if refused is not None:
                    return refused
                try:
                    body = json.loads(await request.body() or b"{}")
                    value = body["value"]
                    if not isinstance(value, str):
                        raise TypeError
                except (ValueError, KeyError, TypeError):
                    return _error(400, "BadParameter", "The request body must be a JSON object "
                                  "with a string 'value'.")
                tags = body.get("tags") if isinstance(body.get("tags"), dict) else None
                made = kv.set_secret(name, value, body.get("contentType"),
                                     {str(k): str(v) for k, v in (tags or {}).items()})
                return bundle(request, name, made, value=True)
            refused = allowed(caller, kv, "get", "getSecret/action", name)
            if refused is not None:
                return refused
            found = [v for v in kv.secret_versions(name)
                     if version is None or v.version.lower() == version.lower()]
            if not found:
                target = f"{name}/{version}" if version else name
                return _error(404, "SecretNotFound", f"A secret with (name/id) {target} was not "
                              "found in this key vault. If you recently deleted this secret you "
                              "may be able to recover it using the correct recovery command. "
                              "For help resolving this issue, please see "
                              "https://go.microsoft.com/fwlink/?linkid=2125182")
            return bundle(request, name, found[-1], value=True)

    async def other(request: Request) -> Response:
        return _error(400, "BadParameter", f"{request.method} {request.url.path} is not "
                      "served by the simulated Key Vault (secrets only).")

    return Starlette(routes=[
        Route("/secrets/{name}", secret, methods=["GET", "PUT"]),
        Route("/secrets/{name}/", secret, methods=["GET"]),  # the SDK's "current version"
        Route("/secrets/{name}/{version}", secret, methods=["GET"]),
        Route("/{rest:path}", other, methods=["GET", "PUT", "POST", "PATCH", "DELETE"]),
    ])


class VaultRouter:
    """Sends requests that came to a vault's port to the Key Vault app, the rest onwards."""

    def __init__(self, main: Any, vaults: Any, ctx: SimContext) -> None:
        self.main, self.vaults, self.ctx = main, vaults, ctx

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        server = scope.get("server") or ("", 0)
        if scope["type"] == "http" and int(server[1] or 0) in self.ctx.vault_ports:
            await self.vaults(scope, receive, send)
            return
        await self.main(scope, receive, send)

"""Test-only routes: the apps' health endpoints and the simulator's admin interface.

These are not Azure APIs; they need no token and exist so that tests and the demo can ask the
independent witness (the app runtime) whether an app works, look at the whole state, change
faults at run time, and play the operator who runs a plan's T-SQL.

- `GET  /_sites/<site>[/slots/<slot>]<health_path>`  200 healthy / 503 with the failing needs
- `GET  /_sim/health`                                  every app's probe
- `GET  /_sim/state`                                   the tenant, read-only (no secret text)
- `GET|POST /_sim/faults`                              latency, fault rates, throttle scale,
                                                       `replication_delay` and
                                                       `sign_in_delay` (seconds), `rules`
                                                       ([{kind, path, method, times}]: a fault
                                                       aimed at the next matching requests)
- `POST /_sim/throttle/reset`                          refill every bucket
- `POST /_sim/sql`  {"server", "database", "script"}   run CREATE USER … FROM EXTERNAL PROVIDER,
                                                       ALTER ROLE … ADD|DROP MEMBER, DROP USER
- `GET  /_sim/callers`                                 the estate's `external_callers`: principal,
                                                       keyId of the secret held (null once
                                                       removed), ip, every, resource, active,
                                                       sign-ins made so far (never the secret)
- `POST /_sim/callers/<name>`  {"active": bool}        stop a caller (no sign-in after now) or
                                                       start it again; 404 for an unknown name
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from migrator.sim.context import SimContext
from migrator.sim.faults import FaultError, FaultMiddleware
from migrator.sim.runtime import Runtime
from migrator.sim.state import ServicePrincipal, SimError, Tenant, utcnow


def routes(ctx: SimContext) -> list[BaseRoute]:
    tenant = ctx.tenant
    runtime = Runtime(tenant)

    async def health(request: Request) -> Response:
        site = request.path_params["site"]
        rest = "/" + request.path_params.get("rest", "")
        slot = None
        m = re.match(r"^/slots/([^/]+)(/.*)?$", rest, re.IGNORECASE)
        with tenant.lock:
            app = tenant.webapp(site)
            if m is not None and app is not None and m.group(1).lower() in app.slots:
                slot, rest = m.group(1), m.group(2) or "/"
                app = tenant.webapp(site, slot)
            if app is None:
                return JSONResponse({"error": f"no site {site}{'/' + slot if slot else ''}"},
                                    status_code=404)
            served = app.health_path or "/"  # with none configured, the app's root answers
            if rest.rstrip("/") != served.rstrip("/"):
                return JSONResponse({"error": f"{app.display} serves health at "
                                              f"{served}"}, status_code=404)
            result = runtime.probe(app)
        return JSONResponse(result.as_json(), status_code=200 if result.healthy else 503)

    async def all_health(request: Request) -> Response:
        with tenant.lock:
            probes = [runtime.probe(a).as_json() for a in tenant.webapps()]
        return JSONResponse({"apps": probes})

    async def state(request: Request) -> Response:
        with tenant.lock:
            return JSONResponse(state_json(tenant))

    async def faults(request: Request) -> Response:
        if request.method == "POST":
            try:
                changes = json.loads(await request.body() or b"{}")
                if not isinstance(changes, dict):
                    raise FaultError("send a JSON object")
                ctx.faults.update(changes)
                if "replication_delay" in changes:
                    delay = float(changes["replication_delay"])
                    if delay < 0:
                        raise FaultError("replication_delay cannot be negative")
                    tenant.replication_delay = delay
                if "sign_in_delay" in changes:
                    delay = float(changes["sign_in_delay"])
                    if delay < 0:
                        raise FaultError("sign_in_delay cannot be negative")
                    tenant.sign_in_delay = delay
            except (ValueError, TypeError) as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
        middleware = ctx.extras.get("middleware")
        counts = middleware.counts if isinstance(middleware, FaultMiddleware) else {}
        arm = middleware.arm_requests if isinstance(middleware, FaultMiddleware) else {}
        return JSONResponse(ctx.faults.as_json() | {
            "replication_delay": tenant.replication_delay,
            "sign_in_delay": tenant.sign_in_delay, "injected": counts,
            "arm_requests": [{"subscription": s, "kind": k, "count": n}
                             for (s, k), n in sorted(arm.items())]})

    async def throttle_reset(request: Request) -> Response:
        middleware = ctx.extras.get("middleware")
        if isinstance(middleware, FaultMiddleware):
            middleware.throttle.reset()
        return Response(status_code=204)

    async def sql(request: Request) -> Response:
        try:
            body = json.loads(await request.body() or b"{}")
            with tenant.lock:
                done = run_tsql(tenant, str(body["server"]), str(body["database"]),
                                str(body["script"]))
        except (ValueError, KeyError, TypeError) as exc:
            return JSONResponse({"error": f"bad request: {exc}"}, status_code=400)
        except SimError as err:
            return JSONResponse({"error": err.message, "code": err.code}, status_code=err.status)
        return JSONResponse({"executed": done})

    async def callers(request: Request) -> Response:
        with tenant.lock:
            tenant.catch_up_sign_ins()
            listed = [c.as_json(tenant.caller_key_id(c))
                      for c in tenant.external_callers.values()]
        return JSONResponse({"callers": listed})

    async def caller(request: Request) -> Response:
        name = str(request.path_params["name"])
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("active"), bool):
            return JSONResponse({"error": 'send {"active": true|false}'}, status_code=400)
        with tenant.lock:
            found = tenant.external_callers.get(name)
            if found is None:
                return JSONResponse({"error": "no such external caller"}, status_code=404)
            now = utcnow()
            tenant.catch_up_sign_ins(now)  # what it did before it stopped stays made
            found.set_active(body["active"], now)
            shown = found.as_json(tenant.caller_key_id(found))
        return JSONResponse(shown)

    return [
        Route("/_sites/{site}", health),
        Route("/_sites/{site}/{rest:path}", health),
        Route("/_sim/health", all_health),
        Route("/_sim/state", state),
        Route("/_sim/faults", faults, methods=["GET", "POST"]),
        Route("/_sim/throttle/reset", throttle_reset, methods=["POST"]),
        Route("/_sim/sql", sql, methods=["POST"]),
        Route("/_sim/callers", callers),
        Route("/_sim/callers/{name}", caller, methods=["POST"]),
    ]


_CREATE = re.compile(r"^CREATE\s+USER\s+\[(?P<name>[^\]]+)\]\s+FROM\s+EXTERNAL\s+PROVIDER"
                     r"(?:\s+WITH\s+OBJECT_ID\s*=\s*'(?P<oid>[0-9a-fA-F-]+)')?$", re.IGNORECASE)
_ROLE = re.compile(r"^ALTER\s+ROLE\s+\[?(?P<role>\w+)\]?\s+(?P<op>ADD|DROP)\s+MEMBER\s+"
                   r"\[(?P<name>[^\]]+)\]$", re.IGNORECASE)
_DROP = re.compile(r"^DROP\s+USER\s+(?:IF\s+EXISTS\s+)?\[(?P<name>[^\]]+)\]$", re.IGNORECASE)


def run_tsql(tenant: Tenant, server: str, database: str, script: str) -> list[str]:
    """The subset of T-SQL a migration plan generates for contained Entra users."""
    srv = tenant.sql_servers.get(server.split(".", maxsplit=1)[0].lower())
    db = srv.databases.get(database.lower()) if srv else None
    if srv is None or db is None:
        raise SimError(404, "DatabaseNotFound", f"Database '{server}/{database}' not found.")
    users_by_name: dict[str, str] = {}
    for user_oid in db.users:
        user = tenant.service_principals.get(user_oid)
        if user is not None:
            users_by_name[user.display_name.lower()] = user_oid
    done = []
    for raw in script.split(";"):
        statement = " ".join(raw.split())
        if not statement or statement.upper() == "GO":
            continue
        if (m := _CREATE.match(statement)) is not None:
            sp = _principal_named(tenant, m.group("name"), m.group("oid"))
            if sp.object_id in db.users:
                raise SimError(400, "15023", f"User, group, or role '{m.group('name')}' already "
                               "exists in the current database.")
            db.users[sp.object_id] = []
            users_by_name[m.group("name").lower()] = sp.object_id
        elif (m := _ROLE.match(statement)) is not None:
            member = users_by_name.get(m.group("name").lower())
            if member is None:
                raise SimError(400, "15151", f"Cannot add the principal '{m.group('name')}', "
                               "because it does not exist or you do not have permission.")
            roles = db.users[member]
            if m.group("op").upper() == "ADD" and m.group("role") not in roles:
                roles.append(m.group("role"))
            elif m.group("op").upper() == "DROP" and m.group("role") in roles:
                roles.remove(m.group("role"))
        elif (m := _DROP.match(statement)) is not None:
            dropped = users_by_name.pop(m.group("name").lower(), "")
            db.users.pop(dropped, None)
        else:
            raise SimError(400, "102", f"Incorrect syntax or unsupported statement: "
                           f"{statement[:60]!r}")
        done.append(statement)
    return done


def _principal_named(tenant: Tenant, name: str, object_id: str | None) -> ServicePrincipal:
    """Azure SQL resolves `[name]` to the one Entra object with that display name."""
    if object_id:
        sp = tenant.visible_sp(object_id)
        if sp is None:
            raise SimError(400, "33130", f"Principal with object id '{object_id}' not found.")
        return sp
    found = [s for s in tenant.service_principals.values()
             if s.display_name.lower() == name.lower() and tenant.is_visible(s)]
    if not found:
        raise SimError(400, "33130", f"Principal '{name}' could not be found or this principal "
                       "type is not supported.")
    if len(found) > 1:
        raise SimError(400, "33131", f"Principal '{name}' has a duplicate display name. Make the "
                       "display name unique, or use WITH OBJECT_ID.")
    return found[0]


def state_json(tenant: Tenant) -> dict[str, Any]:
    """Everything the simulator holds, for assertions in tests. Password credentials appear
    with their hint, never their text (settings are shown as the cloud stores them)."""
    return {
        "tenant": {"id": tenant.id, "domain": tenant.domain, "licence": tenant.licence},
        "applications": [
            {"id": a.object_id, "appId": a.app_id, "displayName": a.display_name,
             "passwordCredentials": [{"keyId": p.key_id, "hint": p.hint,
                                      "endDateTime": p.end.isoformat()} for p in a.passwords]}
            for a in tenant.applications.values()
        ],
        "servicePrincipals": [
            {"id": s.object_id, "appId": s.app_id, "displayName": s.display_name,
             "servicePrincipalType": s.kind, "accountEnabled": s.account_enabled,
             "visible": tenant.is_visible(s), "graphAppRoles": tenant.graph_roles_of(s.object_id)}
            for s in tenant.service_principals.values()
        ],
        "roleAssignments": [
            {"name": r.name, "scope": r.scope, "roleDefinitionId": r.role_definition_id,
             "principalId": r.principal_id, "principalType": r.principal_type}
            for r in tenant.role_assignments.values()
        ],
        "sites": [
            {"id": w.id, "name": w.display, "kind": w.kind, "identity": {
                "type": w.identity.type, "principalId": w.identity.system_principal_id,
                "userAssignedIdentities": list(w.identity.user_assigned)},
             "keyVaultReferenceIdentity": w.key_vault_reference_identity,
             "appSettings": dict(w.app_settings),
             "connectionStrings": {k: {"type": c.type, "value": c.value}
                                   for k, c in w.connection_strings.items()},
             "slotSettingNames": list(w.sticky_app_settings), "restarts": w.restarts}
            for w in tenant.webapps()
        ],
        "keyVaults": [
            {"id": k.id, "rbac": k.rbac, "accessPolicies": [
                {"objectId": p.object_id, "secrets": p.secrets} for p in k.access_policies]}
            for k in tenant.vaults.values()
        ],
        "userAssignedIdentities": [
            {"id": u.id, "clientId": u.client_id, "principalId": u.principal_id}
            for u in tenant.identities.values()
        ],
        "sqlServers": [
            {"name": s.name, "databases": {d.name: dict(d.users) for d in s.databases.values()}}
            for s in tenant.sql_servers.values()
        ],
    }

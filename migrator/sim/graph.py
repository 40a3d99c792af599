"""Microsoft Graph v1.0 as msgraph-sdk sees it: applications, service principals, app roles.

Why this exists: a migration reads which client secrets an app registration still carries, adds
and removes secrets, disables the old service principal and grants Graph application permissions
(app-role assignments) to the managed identity that replaces it. These routes answer those calls
with Graph's own shapes (camelCase, `@odata.context`, `value` arrays, an absolute
`@odata.nextLink`) and Graph's own errors (`Request_ResourceNotFound`,
`Authorization_RequestDenied`, ...), so msgraph-sdk parses them exactly as it parses Azure's, and
the tool's Graph code runs unchanged against both.

Rules kept from Graph: every request needs a Graph bearer token whose `roles` allow it; secret
text leaves the simulator only in the `addPassword` response (reads show the three-character
`hint`); a managed identity still replicating (`Tenant.is_visible` false) does not exist yet;
granting the same app role twice is refused.

Sign-in logs: `GET /beta/auditLogs/signIns` (beta only, as in Graph) serves what Entra logged
(sim/signins.py): newest first, `$top` up to 1,000 (also the default), `$skiptoken` paging, the
`$filter` subset a revoke's evidence needs. It needs `AuditLog.Read.All` in the token and a P1 or
P2 tenant (403 `Authentication_RequestFromNonPremiumTenantOrB2CTenant` otherwise), and shows an
event only once `Tenant.sign_in_delay` seconds have passed since it happened.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from migrator.sim.catalog import GRAPH_APP_ID
from migrator.sim.context import SimContext, graph_error, request_id
from migrator.sim.signins import DEFAULT_PAGE_SIZE as SIGN_IN_PAGE_SIZE
from migrator.sim.signins import (
    LICENCE_CODE,
    LICENCE_MESSAGE,
    FilterError,
    SkipTokenError,
    page_after,
    skiptoken_after,
)
from migrator.sim.signins import MAX_PAGE_SIZE as SIGN_IN_MAX_PAGE_SIZE
from migrator.sim.signins import parse_filter as parse_sign_in_filter
from migrator.sim.state import (
    Application,
    AppRoleAssignment,
    PasswordCredential,
    ServicePrincipal,
    SimError,
    Tenant,
    utcnow,
)
from migrator.sim.tokens import Caller

Json = dict[str, Any]
Handler = Callable[[Request, Caller], Awaitable[Response]]

# Application permissions (token `roles`) each kind of call accepts; any one of a set suffices.
READ_ROLES = frozenset({"Application.Read.All", "Application.ReadWrite.All",
                        "Directory.Read.All", "Directory.ReadWrite.All"})
WRITE_ROLES = frozenset({"Application.ReadWrite.All", "Directory.ReadWrite.All"})
# Graph documents app-role grants as "AppRoleAssignment.ReadWrite.All and Application.Read.All"
# (or Directory.Read.All): the caller needs one of ASSIGN_ROLES *and* one of READ_ROLES.
ASSIGN_ROLES = frozenset({"AppRoleAssignment.ReadWrite.All"})
# Sign-in logs: "Application | AuditLog.Read.All" (learn.microsoft.com/graph/api/signin-list).
AUDIT_ROLES = frozenset({"AuditLog.Read.All"})
# The query options signIn lists take ("supports the $top, $skiptoken, and $filter OData
# query parameters").
SIGN_IN_OPTIONS = frozenset({"$top", "$skiptoken", "$filter"})

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 999
# `$expand` on a relationship of directory objects returns at most 20 related objects and no
# next link for the rest, and a page of a request with `$expand` holds at most 100 objects
# whatever `$top` says (Graph known issue 13635, developer.microsoft.com/graph/known-issues;
# learn.microsoft.com/graph/query-parameters#expand-parameter). The scanner must notice.
EXPAND_LIMIT = 20
EXPAND_PAGE_SIZE = 100
DEFAULT_ACCESS_ROLE_ID = "00000000-0000-0000-0000-000000000000"
MICROSOFT_SERVICES_TENANT = "f8cdef31-a31e-4b4a-93e4-5f571e91255a"  # owns first-party apps
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
GRAPH_CONTENT_TYPE = ("application/json;odata.metadata=minimal;odata.streaming=true;"
                      "IEEE754Compatible=false;charset=utf-8")

# What Graph shows for its own application permissions (displayName, description).
GRAPH_ROLE_TEXT: dict[str, tuple[str, str]] = {
    "Application.Read.All": (
        "Read all applications",
        "Allows the app to read all applications and service principals without a signed-in "
        "user."),
    "Application.ReadWrite.All": (
        "Read and write all applications",
        "Allows the app to create, read, update and delete applications and service principals "
        "without a signed-in user. Does not allow management of consent grants."),
    "Application.ReadWrite.OwnedBy": (
        "Manage apps that this app creates or owns",
        "Allows the app to create other applications, and fully manage those applications "
        "(read, update, update application secrets and delete), without a signed-in user. It "
        "cannot update any apps that it is not an owner of."),
    "AppRoleAssignment.ReadWrite.All": (
        "Manage app permission grants and app role assignments",
        "Allows the app to manage permission grants for application permissions to any API "
        "(including Microsoft Graph) and application assignments for any app, without a "
        "signed-in user."),
    "Directory.Read.All": (
        "Read directory data",
        "Allows the app to read data in your organization's directory, such as users, groups "
        "and apps, without a signed-in user."),
    "Directory.ReadWrite.All": (
        "Read and write directory data",
        "Allows the app to read and write data in your organization's directory, such as users, "
        "and groups, without a signed-in user. Does not allow user or group deletion."),
    "User.Read.All": (
        "Read all users' full profiles",
        "Allows the app to read user profiles without a signed in user."),
    "Group.Read.All": (
        "Read all groups",
        "Allows the app to read group properties and memberships, and read conversations for "
        "all groups, without a signed-in user."),
    "Mail.Send": (
        "Send mail as any user",
        "Allows the app to send mail as any user without a signed-in user."),
    "Sites.Read.All": (
        "Read items in all site collections",
        "Allows the app to read documents and list items in all site collections without a "
        "signed in user."),
}


class GraphJSONResponse(JSONResponse):
    media_type = GRAPH_CONTENT_TYPE


# --- errors ------------------------------------------------------------------------------------


def not_found(key: str) -> SimError:
    return SimError(404, "Request_ResourceNotFound", (
        f"Resource '{key}' does not exist or one of its queried reference-property objects are "
        "not present."))


def denied() -> SimError:
    return SimError(403, "Authorization_RequestDenied",
                    "Insufficient privileges to complete the operation.")


def bad_request(message: str, code: str = "Request_BadRequest") -> SimError:
    return SimError(400, code, message)


def invalid_value(prop: str, resource: str) -> SimError:
    return bad_request(f"Invalid value specified for property '{prop}' of resource '{resource}'.")


def require(caller: Caller, *needs: frozenset[str]) -> None:
    """Refuse unless the token's roles meet every set in `needs` (one role from each)."""
    held = set(caller.roles)
    if not all(held & need for need in needs):
        raise denied()


OWNED_BY = "Application.ReadWrite.OwnedBy"


def may_manage(caller: Caller) -> bool:
    """Whether the caller may try to manage some application: with a write role any, with
    only Application.ReadWrite.OwnedBy those it owns (checked with `require_owner`)."""
    held = set(caller.roles)
    if not held & (WRITE_ROLES | {OWNED_BY}):
        raise denied()
    return bool(held & WRITE_ROLES)


def require_owner(caller: Caller, app: Application) -> None:
    """Application.ReadWrite.OwnedBy: "It cannot update any apps that it is not an owner of"
    (its published description; learn.microsoft.com/graph/permissions-reference)."""
    if caller.object_id not in app.owners:
        raise denied()


# --- JSON shapes -------------------------------------------------------------------------------


def timestamp(dt: datetime) -> str:
    """Graph's UTC form: `2024-01-01T00:00:00Z`, with fractional seconds when there are any."""
    dt = dt.astimezone(timezone.utc)
    if dt.microsecond:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(value: object, prop: str) -> datetime:
    """An ISO 8601 date-time from a request body (`Z`, offsets and 7-digit fractions)."""
    if not isinstance(value, str):
        raise invalid_value(prop, "PasswordCredential")
    text = re.sub(r"(\.\d{6})\d+", r"\1", value.strip()).replace("Z", "+00:00")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise invalid_value(prop, "PasswordCredential") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def password_json(cred: PasswordCredential, *, with_secret: bool = False) -> Json:
    return {
        "customKeyIdentifier": None,
        "displayName": cred.display_name,
        "endDateTime": timestamp(cred.end),
        "hint": cred.hint,
        "keyId": cred.key_id,
        "secretText": cred.secret if with_secret else None,
        "startDateTime": timestamp(cred.start),
    }


def application_json(tenant: Tenant, app: Application) -> Json:
    return {
        "id": app.object_id,
        "deletedDateTime": None,
        "appId": app.app_id,
        "applicationTemplateId": None,
        "createdDateTime": timestamp(app.created),
        "description": None,
        "disabledByMicrosoftStatus": None,
        "displayName": app.display_name,
        "groupMembershipClaims": None,
        "identifierUris": [],
        "isDeviceOnlyAuthSupported": None,
        "isFallbackPublicClient": None,
        "notes": None,
        "publisherDomain": tenant.domain,
        "serviceManagementReference": None,
        "signInAudience": "AzureADMyOrg",
        "tags": [],
        "tokenEncryptionKeyId": None,
        "defaultRedirectUri": None,
        "addIns": [],
        "api": {"acceptMappedClaims": None, "knownClientApplications": [],
                "requestedAccessTokenVersion": None, "oauth2PermissionScopes": [],
                "preAuthorizedApplications": []},
        "appRoles": [],
        "certification": None,
        "info": dict(_INFO),
        "keyCredentials": [],
        "optionalClaims": None,
        "parentalControlSettings": {"countriesBlockedForMinors": [],
                                    "legalAgeGroupRule": "Allow"},
        "passwordCredentials": [password_json(p) for p in app.passwords],
        "publicClient": {"redirectUris": []},
        "requiredResourceAccess": [],
        "spa": {"redirectUris": []},
        "verifiedPublisher": dict(_NO_PUBLISHER),
        "web": {"homePageUrl": None, "logoutUrl": None, "redirectUris": [],
                "implicitGrantSettings": {"enableAccessTokenIssuance": False,
                                          "enableIdTokenIssuance": False}},
    }


# Graph sends these objects with every field null rather than leaving them out (Azure/azure-cli
# role recordings test_app_credential, test_sp_credential).
_INFO: Json = {"logoUrl": None, "marketingUrl": None, "privacyStatementUrl": None,
               "supportUrl": None, "termsOfServiceUrl": None}
_NO_PUBLISHER: Json = {"displayName": None, "verifiedPublisherId": None, "addedDateTime": None}


def app_role_json(value: str, role_id: str) -> Json:
    display, description = GRAPH_ROLE_TEXT.get(value, (value, value))
    return {
        "allowedMemberTypes": ["Application"],
        "description": description,
        "displayName": display,
        "id": role_id,
        "isEnabled": True,
        "origin": "Application",
        "value": value,
    }


def service_principal_json(tenant: Tenant, sp: ServicePrincipal) -> Json:
    managed = sp.kind == "ManagedIdentity"
    is_graph = sp.app_id.lower() == GRAPH_APP_ID
    if managed:
        owner: str | None = None
        names = [sp.app_id, *sp.alternative_names[-1:]]
    elif is_graph:
        owner = MICROSOFT_SERVICES_TENANT
        names = [GRAPH_APP_ID, "https://graph.microsoft.com", "https://graph.microsoft.com/",
                 "https://canary.graph.microsoft.com", "https://ags.windows.net"]
    else:
        owner = tenant.id
        names = [sp.app_id]
    return {
        "id": sp.object_id,
        "deletedDateTime": None,
        "accountEnabled": sp.account_enabled,
        "alternativeNames": list(sp.alternative_names),
        "appDisplayName": None if managed else sp.display_name,
        "appDescription": None,
        "appId": sp.app_id,
        "applicationTemplateId": None,
        "appOwnerOrganizationId": owner,
        "appRoleAssignmentRequired": False,
        "createdDateTime": None if managed or is_graph else timestamp(sp.created),
        "description": None,
        "disabledByMicrosoftStatus": None,
        "displayName": sp.display_name,
        "homepage": None,
        "loginUrl": None,
        "logoutUrl": None,
        "notes": None,
        "notificationEmailAddresses": [],
        "preferredSingleSignOnMode": None,
        "preferredTokenSigningKeyThumbprint": None,
        "replyUrls": [],
        "servicePrincipalNames": names,
        "servicePrincipalType": sp.kind,
        "signInAudience": None if managed else (
            "AzureADMultipleOrgs" if is_graph else "AzureADMyOrg"),
        "tags": [],
        "tokenEncryptionKeyId": None,
        "samlSingleSignOnSettings": None,
        "addIns": [],
        "appRoles": [app_role_json(v, i) for v, i in sp.app_roles.items()],
        "info": dict(_INFO),
        "keyCredentials": [],
        "oauth2PermissionScopes": [],
        "passwordCredentials": [],
        "resourceSpecificApplicationPermissions": [],
        "verifiedPublisher": dict(_NO_PUBLISHER),
    }


def assignment_json(tenant: Tenant, a: AppRoleAssignment) -> Json:
    principal = tenant.service_principals.get(a.principal_id.lower())
    resource = tenant.service_principals.get(a.resource_id.lower())
    return {
        "id": a.id,
        "deletedDateTime": None,
        "appRoleId": a.app_role_id,
        "createdDateTime": timestamp(a.created),
        "principalDisplayName": principal.display_name if principal else None,
        "principalId": a.principal_id,
        "principalType": "ServicePrincipal",
        "resourceDisplayName": resource.display_name if resource else None,
        "resourceId": a.resource_id,
    }


# --- $filter -----------------------------------------------------------------------------------

_STR = r"'(?:[^']|'')*'"
_CLAUSE = re.compile(
    rf"""\s*(?:
        (?P<prop>[A-Za-z]+)\s+eq\s+(?P<val>{_STR}|true|false|null)
      | startswith\(\s*(?P<sprop>[A-Za-z]+)\s*,\s*(?P<sval>{_STR})\s*\)
      | (?P<iprop>[A-Za-z]+)\s+in\s+\((?P<ivals>\s*{_STR}(?:\s*,\s*{_STR})*)\s*\)
      | (?P<aprop>[A-Za-z]+)/any\(\s*(?P<var>\w+)\s*:\s*(?P=var)\s+eq\s+(?P<aval>{_STR})\s*\)
    )\s*""",
    re.VERBOSE | re.IGNORECASE,
)
_AND = re.compile(r"and\b", re.IGNORECASE)
_QUOTED = re.compile(_STR)

Predicate = Callable[[Json], bool]


@dataclass(frozen=True)
class Entity:
    """A Graph collection: its name in URLs and the properties `$filter` accepts."""

    collection: str  # applications, servicePrincipals, ...
    type_name: str  # Application, ServicePrincipal, ...
    filterable: tuple[str, ...]


APPLICATIONS = Entity("applications", "Application", ("id", "appId", "displayName"))
SERVICE_PRINCIPALS = Entity("servicePrincipals", "ServicePrincipal", (
    "id", "appId", "displayName", "servicePrincipalType", "accountEnabled",
    "alternativeNames", "servicePrincipalNames"))
ASSIGNMENTS = Entity("appRoleAssignments", "AppRoleAssignment", (
    "id", "principalId", "resourceId", "appRoleId", "principalDisplayName"))


def _literal(token: str) -> object:
    lowered = token.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "null":
        return None
    return token[1:-1].replace("''", "'")


def _same(actual: object, expected: object) -> bool:
    if isinstance(actual, str) and isinstance(expected, str):
        return actual.lower() == expected.lower()
    return actual is expected or actual == expected


def parse_filter(text: str, entity: Entity) -> list[Predicate]:
    """Graph's `$filter` subset for directory objects: `eq`, `in`, `startswith`, `any`, `and`."""
    known = {p.lower(): p for p in entity.filterable}
    predicates: list[Predicate] = []
    pos = 0
    while True:
        m = _CLAUSE.match(text, pos)
        if m is None:
            raise bad_request(f"Invalid filter clause: Syntax error at position {pos} in "
                              f"'{text}'.", "BadRequest")
        raw = m.group("prop") or m.group("sprop") or m.group("iprop") or m.group("aprop")
        prop = known.get(raw.lower())
        if prop is None:
            raise bad_request(
                f"Unsupported or invalid query filter clause specified for property '{raw}' of "
                f"resource '{entity.type_name}'.", "Request_UnsupportedQuery")
        predicates.append(_predicate(m, prop))
        pos = m.end()
        if pos >= len(text):
            return predicates
        joined = _AND.match(text, pos)
        if joined is None:
            raise bad_request(f"Invalid filter clause: Syntax error at position {pos} in "
                              f"'{text}'.", "BadRequest")
        pos = joined.end()


def _predicate(m: re.Match[str], prop: str) -> Predicate:
    if m.group("val") is not None:
        want = _literal(m.group("val"))
        return lambda item: _same(item.get(prop), want)
    if m.group("sval") is not None:
        prefix = str(_literal(m.group("sval"))).lower()
        return lambda item: str(item.get(prop) or "").lower().startswith(prefix)
    if m.group("ivals") is not None:
        options = [_literal(t) for t in _QUOTED.findall(m.group("ivals"))]
        return lambda item: any(_same(item.get(prop), o) for o in options)
    member = _literal(m.group("aval"))
    return lambda item: any(_same(v, member) for v in item.get(prop) or [])


# --- collections, paging, $select --------------------------------------------------------------


def _skiptoken(last_id: str) -> str:
    return base64.urlsafe_b64encode(f"sim1:{last_id}".encode()).decode().rstrip("=")


def _after_id(token: str) -> str:
    try:
        decoded = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        decoded = ""
    if not decoded.startswith("sim1:"):
        raise expired_page_token()
    return decoded.removeprefix("sim1:")


def expired_page_token() -> SimError:
    return bad_request("The specified page token value has expired and can no longer be "
                       "included in your request.", "Directory_ExpiredPageToken")


def next_link(ctx: SimContext, request: Request, token: str) -> str:
    """The request's own URL, absolute, with `$skiptoken` replaced by `token`."""
    params = [(k, v) for k, v in request.query_params.multi_items() if k != "$skiptoken"]
    params.append(("$skiptoken", token))
    path = quote(request.url.path, safe="/()'=,$")
    query = urlencode(params, safe="$'(),", quote_via=quote)
    return f"{ctx.base_url}{path}?{query}"


def sign_in_page_size(request: Request) -> int:
    raw = request.query_params.get("$top")
    if raw is None:
        return SIGN_IN_PAGE_SIZE
    if not raw.isdigit() or not 1 <= int(raw) <= SIGN_IN_MAX_PAGE_SIZE:
        raise bad_request(f"Invalid page size specified: '{raw[:20]}'. Must be between 1 and "
                          f"{SIGN_IN_MAX_PAGE_SIZE} inclusive.", "Request_BadRequest")
    return int(raw)


def _selected(request: Request, sample: Json | None, entity: Entity) -> list[str] | None:
    raw = request.query_params.get("$select")
    if not raw:
        return None
    wanted = [s.strip() for s in raw.split(",") if s.strip()]
    if sample is not None:
        keys = {k.lower(): k for k in sample}
        unknown = [w for w in wanted if w.lower() not in keys]
        if unknown:
            raise bad_request(f"Could not find a property named '{unknown[0]}' on type "
                              f"'microsoft.graph.{entity.type_name[0].lower()}"
                              f"{entity.type_name[1:]}'.", "BadRequest")
        return [keys[w.lower()] for w in wanted]
    return wanted


def _project(item: Json, fields: list[str] | None) -> Json:
    return item if fields is None else {k: item[k] for k in fields if k in item}


def _context_suffix(fields: list[str] | None) -> str:
    return f"({','.join(fields)})" if fields else ""


def _page_size(request: Request) -> int:
    raw = request.query_params.get("$top")
    expanded = bool(request.query_params.get("$expand"))
    if raw is None:
        return DEFAULT_PAGE_SIZE
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE_SIZE:
        raise bad_request(f"Invalid page size specified: '{raw}'. Must be between 1 and "
                          f"{MAX_PAGE_SIZE} inclusive.", "Request_BadRequest")
    return min(int(raw), EXPAND_PAGE_SIZE) if expanded else int(raw)


def collection_response(ctx: SimContext, request: Request, items: list[Json], *,
                        entity: Entity, context: str, sample: Json | None = None,
                        expand: Callable[[Json], Json] | None = None) -> Response:
    """One page of `items` (already visible to the caller), filtered, ordered by id and paged
    with an opaque `$skiptoken` naming the last id served: stable while objects come and go."""
    filter_text = request.query_params.get("$filter")
    if filter_text:
        predicates = parse_filter(filter_text, entity)
        items = [i for i in items if all(p(i) for p in predicates)]
    items.sort(key=lambda i: str(i["id"]).lower())
    size = _page_size(request)
    token = request.query_params.get("$skiptoken")
    if token:
        after = _after_id(token).lower()
        items_left = [i for i in items if str(i["id"]).lower() > after]
    else:
        items_left = items
    page = items_left[:size]
    fields = _selected(request, sample or (items[0] if items else None), entity)
    body: Json = {"@odata.context": f"{ctx.base_url}/v1.0/$metadata#{context}"
                                    f"{_context_suffix(fields)}"}
    if request.query_params.get("$count", "").lower() == "true":
        body["@odata.count"] = len(items)
    if len(items_left) > size:
        body["@odata.nextLink"] = next_link(ctx, request, _skiptoken(str(page[-1]["id"])))
    projected = [_project(i, fields) for i in page]
    if expand is not None:  # navigation properties come with $expand whatever $select says
        projected = [expand(p | {"id": i["id"]}) for p, i in zip(projected, page, strict=True)]
    body["value"] = projected
    return GraphJSONResponse(body)


def entity_response(ctx: SimContext, request: Request, item: Json, *, entity: Entity,
                    context: str, status: int = 200) -> Response:
    fields = _selected(request, item, entity)
    body: Json = {"@odata.context": f"{ctx.base_url}/v1.0/$metadata#{context}"
                                    f"{_context_suffix(fields)}/$entity"}
    body.update(_project(item, fields))
    return GraphJSONResponse(body, status_code=status)


async def read_body(request: Request) -> Json:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise bad_request("Unable to read JSON request payload. Please ensure Content-Type "
                          "header is set and payload is of valid JSON format.", "BadRequest")
    return parsed


def guid_field(body: Json, prop: str, resource: str) -> str:
    """A GUID property of a request body, lower-cased; Graph's 400 when missing or malformed."""
    value = body.get(prop)
    if isinstance(value, str):
        try:
            return str(uuid.UUID(value))
        except ValueError:
            pass
    raise invalid_value(prop, resource)


# --- look-ups (call with tenant.lock held) -----------------------------------------------------


def find_application(tenant: Tenant, request: Request) -> Application:
    params = request.path_params
    if "app_id" in params:
        key = str(params["app_id"])
        app = tenant.app_by_app_id(key)
    else:
        key = str(params["id"])
        app = tenant.applications.get(key.lower())
    if app is None:
        raise not_found(key)
    return app


_APP_ID_FILTER = re.compile(
    r"^\s*appId\s+(?:eq\s+'(?P<one>[^']*)'|in\s+\((?P<many>[^)]*)\))\s*$", re.IGNORECASE)


def app_id_filter(request: Request) -> list[str] | None:
    """The app ids of a plain `appId eq|in` filter, so a look-up uses the tenant's index
    instead of rendering every object (collection_response still applies the filter)."""
    m = _APP_ID_FILTER.match(request.query_params.get("$filter") or "")
    if m is None:
        return None
    if m.group("one") is not None:
        return [m.group("one")]
    return re.findall(r"'([^']*)'", m.group("many"))


def find_sp(tenant: Tenant, request: Request) -> ServicePrincipal:
    params = request.path_params
    if "app_id" in params:
        key = str(params["app_id"])
        sp = tenant.sp_by_app_id(key)
        sp = sp if sp is not None and tenant.is_visible(sp) else None
    else:
        key = str(params["id"])
        sp = tenant.visible_sp(key)
    if sp is None:
        raise not_found(key)
    return sp


def visible_sps(tenant: Tenant) -> list[ServicePrincipal]:
    return [sp for sp in tenant.service_principals.values() if tenant.is_visible(sp)]


def live_assignments(tenant: Tenant, *, principal_id: str | None = None,
                     resource_id: str | None = None) -> list[AppRoleAssignment]:
    """Assignments whose principal and resource still exist (Graph cascades deletions)."""
    found = []
    for a in tenant.app_role_assignments.values():
        if principal_id is not None and a.principal_id.lower() != principal_id.lower():
            continue
        if resource_id is not None and a.resource_id.lower() != resource_id.lower():
            continue
        if a.principal_id.lower() in tenant.service_principals and \
                a.resource_id.lower() in tenant.service_principals:
            found.append(a)
    return found


def new_assignment_id(principal_id: str) -> str:
    """Graph's form: base64url of the principal's GUID (little-endian) and 16 more bytes."""
    raw = uuid.UUID(principal_id).bytes_le + uuid.uuid4().bytes
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def grant_app_role(tenant: Tenant, resource: ServicePrincipal, body: Json) -> AppRoleAssignment:
    """Graph's checks for a new app-role assignment, then the assignment (tenant.lock held)."""
    principal_id = guid_field(body, "principalId", "AppRoleAssignment")
    resource_id = guid_field(body, "resourceId", "AppRoleAssignment")
    app_role_id = guid_field(body, "appRoleId", "AppRoleAssignment")
    if resource_id.lower() != resource.object_id.lower():
        raise bad_request("Not a valid reference update.")
    principal = tenant.visible_sp(principal_id)
    if principal is None:  # unknown, or a managed identity still replicating
        raise bad_request("Not a valid reference update.")
    known = {i.lower() for i in resource.app_roles.values()}
    if app_role_id not in known and not (app_role_id == DEFAULT_ACCESS_ROLE_ID and not known):
        raise bad_request("Permission being assigned was not found on application "
                          f"'{resource.app_id}'.")
    for a in tenant.app_role_assignments.values():
        if (a.principal_id.lower(), a.resource_id.lower(), a.app_role_id.lower()) == (
                principal.object_id.lower(), resource.object_id.lower(), app_role_id):
            raise bad_request("Permission being assigned already exists on the object.")
    assignment = AppRoleAssignment(new_assignment_id(principal.object_id), principal.object_id,
                                   resource.object_id, app_role_id, created=utcnow())
    tenant.app_role_assignments[assignment.id] = assignment
    return assignment


def _with_request_ids(request: Request, response: Response) -> Response:
    """Graph answers every request with its own `request-id` and echoes the caller's
    `client-request-id` (or repeats the request id): what an operator hands to support."""
    rid = response.headers.get("request-id") or request_id()
    response.headers["request-id"] = rid
    response.headers["client-request-id"] = request.headers.get("client-request-id", rid)
    # and the headers every recorded Graph answer carries (Azure/azure-cli role recordings)
    response.headers.setdefault("cache-control", "no-cache")
    response.headers.setdefault("strict-transport-security", "max-age=31536000")
    response.headers.setdefault("x-ms-ags-diagnostic", AGS_DIAGNOSTIC)
    if response.headers.get("content-type", "").startswith("application/json"):
        response.headers.setdefault("odata-version", "4.0")
    return response


AGS_DIAGNOSTIC = json.dumps({"ServerInfo": {"DataCenter": "migrator.sim", "Slice": "E",
                                            "Ring": "5", "ScaleUnit": "001",
                                            "RoleInstance": "SIM"}}, separators=(",", ":"))


# --- routes ------------------------------------------------------------------------------------


def routes(ctx: SimContext) -> list[BaseRoute]:
    tenant = ctx.tenant

    def route(path: str, handlers: Mapping[str, Handler]) -> Route:
        """Every method reaches the handler table: an unsupported one gets Graph's 405, not
        Starlette's plain-text one (or ARM's catch-all further down the route list)."""
        return Route(path, endpoint(handlers), methods=ALL_METHODS)

    def endpoint(handlers: Mapping[str, Handler]) -> Callable[[Request], Awaitable[Response]]:
        async def dispatch(request: Request) -> Response:
            try:
                caller = ctx.graph_caller(request)
                handler = handlers.get(request.method)
                if handler is None:
                    raise SimError(405, "Request_BadRequest",
                                   "Specified HTTP method is not allowed for the request target.")
                response = await handler(request, caller)
            except SimError as err:
                response = graph_error(err)
            return _with_request_ids(request, response)
        return dispatch

    # -- applications

    async def list_applications(request: Request, caller: Caller) -> Response:
        require(caller, READ_ROLES)
        wanted = app_id_filter(request)
        with tenant.lock:
            apps = (tenant.applications.values() if wanted is None else
                    [a for app_id in wanted for a in tenant.applications.find(app_id)])
            items = [application_json(tenant, a) for a in apps]
        return collection_response(ctx, request, items, entity=APPLICATIONS,
                                   context="applications")

    async def get_application(request: Request, caller: Caller) -> Response:
        require(caller, READ_ROLES)
        with tenant.lock:
            item = application_json(tenant, find_application(tenant, request))
        return entity_response(ctx, request, item, entity=APPLICATIONS,
                               context="applications")

    async def list_owners(request: Request, caller: Caller) -> Response:
        """GET /applications/{id}/owners: the registration's owners as directory objects
        (Application.Read.All, or OwnedBy for an app the caller owns)."""
        held = set(caller.roles)
        if not held & (READ_ROLES | {OWNED_BY}):
            raise denied()
        with tenant.lock:
            app = find_application(tenant, request)
            if not held & READ_ROLES:
                require_owner(caller, app)
            items = [{"@odata.type": "#microsoft.graph.servicePrincipal",
                      **service_principal_json(tenant, sp)}
                     for oid in app.owners if (sp := tenant.visible_sp(oid)) is not None]
        return GraphJSONResponse({"@odata.context": f"{ctx.base_url}/v1.0/$metadata#"
                                                    "directoryObjects", "value": items})

    async def add_password(request: Request, caller: Caller) -> Response:
        any_app = may_manage(caller)
        body = await read_body(request)
        spec = body.get("passwordCredential") or {}
        if not isinstance(spec, dict):
            raise invalid_value("passwordCredential", "Application")
        display_name = spec.get("displayName")
        if display_name is not None and not isinstance(display_name, str):
            raise invalid_value("displayName", "PasswordCredential")
        start = parse_timestamp(spec["startDateTime"], "startDateTime") \
            if spec.get("startDateTime") is not None else None
        end = parse_timestamp(spec["endDateTime"], "endDateTime") \
            if spec.get("endDateTime") is not None else None
        if end is not None and end <= (start or utcnow()):
            raise invalid_value("endDateTime", "PasswordCredential")
        with tenant.lock:
            app = find_application(tenant, request)
            if not any_app:
                require_owner(caller, app)
            cred = tenant.add_password(app, display_name, end)
            if start is not None:
                if start >= cred.end:
                    app.passwords.remove(cred)
                    raise invalid_value("startDateTime", "PasswordCredential")
                cred.start = start
            body_out: Json = {"@odata.context": f"{ctx.base_url}/v1.0/$metadata#"
                                                "microsoft.graph.passwordCredential"}
            body_out.update(password_json(cred, with_secret=True))
        return GraphJSONResponse(body_out)

    async def remove_password(request: Request, caller: Caller) -> Response:
        any_app = may_manage(caller)
        body = await read_body(request)
        key_id = guid_field(body, "keyId", "PasswordCredential")
        with tenant.lock:
            app = find_application(tenant, request)
            if not any_app:
                require_owner(caller, app)
            match = next((p for p in app.passwords if p.key_id.lower() == key_id), None)
            if match is None:
                raise bad_request(f"No password credential found with keyId {key_id}.")
            tenant.catch_up_sign_ins()  # what callers did with it before it went
            app.passwords.remove(match)
        return Response(status_code=204)

    # -- service principals

    def sp_expansion(request: Request) -> Callable[[Json], Json] | None:
        """`$expand=appRoleAssignments`: each principal with what it has been granted."""
        raw = request.query_params.get("$expand")
        if not raw:
            return None
        wanted = {w.strip().lower() for w in raw.split(",") if w.strip()}
        if wanted != {"approleassignments"}:
            raise bad_request(f"Could not find a navigation property named '{raw}' on type "
                              "'microsoft.graph.servicePrincipal' that the simulator expands.",
                              "BadRequest")
        with tenant.lock:
            by_principal: dict[str, list[Json]] = {}
            for a in live_assignments(tenant):
                by_principal.setdefault(a.principal_id.lower(), []).append(
                    assignment_json(tenant, a))

        def expand(item: Json) -> Json:
            granted = by_principal.get(str(item["id"]).lower(), [])
            return item | {"appRoleAssignments": granted[:EXPAND_LIMIT]}

        return expand

    async def list_sps(request: Request, caller: Caller) -> Response:
        require(caller, READ_ROLES)
        expand = sp_expansion(request)
        wanted = app_id_filter(request)
        with tenant.lock:
            sps = (visible_sps(tenant) if wanted is None else
                   [sp for app_id in wanted for sp in tenant.service_principals.find(app_id)
                    if tenant.is_visible(sp)])
            items = [service_principal_json(tenant, sp) for sp in sps]
        return collection_response(ctx, request, items, entity=SERVICE_PRINCIPALS,
                                   context="servicePrincipals", expand=expand)

    async def get_sp(request: Request, caller: Caller) -> Response:
        require(caller, READ_ROLES)
        with tenant.lock:
            item = service_principal_json(tenant, find_sp(tenant, request))
        return entity_response(ctx, request, item, entity=SERVICE_PRINCIPALS,
                               context="servicePrincipals")

    async def patch_sp(request: Request, caller: Caller) -> Response:
        require(caller, WRITE_ROLES)
        body = await read_body(request)
        changes = {k: v for k, v in body.items() if not k.startswith("@odata.")}
        for key, value in changes.items():
            if key == "accountEnabled" and not isinstance(value, bool):
                raise invalid_value(key, "ServicePrincipal")
            if key == "displayName" and (not isinstance(value, str) or not value.strip()):
                raise invalid_value(key, "ServicePrincipal")
            if key not in ("accountEnabled", "displayName"):
                raise bad_request(f"Property '{key}' is read-only and cannot be set.")
        with tenant.lock:
            sp = find_sp(tenant, request)
            if "accountEnabled" in changes:
                tenant.catch_up_sign_ins()  # sign-ins before it changed keep their outcome
                sp.account_enabled = bool(changes["accountEnabled"])
            if "displayName" in changes:
                sp.display_name = str(changes["displayName"])
        return Response(status_code=204)

    # -- app-role assignments: granted to a principal, or granted on a resource

    def assignment_routes(relation: str, side: str) -> list[BaseRoute]:
        """`appRoleAssignments` (side "principal") or `appRoleAssignedTo` (side "resource")."""

        def scoped(sp: ServicePrincipal) -> list[AppRoleAssignment]:
            if side == "principal":
                return live_assignments(tenant, principal_id=sp.object_id)
            return live_assignments(tenant, resource_id=sp.object_id)

        def one(sp: ServicePrincipal, assignment_id: str) -> AppRoleAssignment:
            found = next((a for a in scoped(sp) if a.id == assignment_id), None)
            if found is None:
                raise not_found(assignment_id)
            return found

        def context(sp: ServicePrincipal) -> str:
            return f"servicePrincipals('{sp.object_id}')/{relation}"

        async def list_all(request: Request, caller: Caller) -> Response:
            require(caller, READ_ROLES)
            with tenant.lock:
                sp = find_sp(tenant, request)
                items = [assignment_json(tenant, a) for a in scoped(sp)]
                sample = assignment_json(tenant, AppRoleAssignment("", "", "", ""))
            return collection_response(ctx, request, items, entity=ASSIGNMENTS,
                                       context=context(sp), sample=sample)

        async def create(request: Request, caller: Caller) -> Response:
            require(caller, ASSIGN_ROLES, READ_ROLES)
            body = await read_body(request)
            with tenant.lock:
                sp = find_sp(tenant, request)
                if side == "principal":
                    pid = guid_field(body, "principalId", "AppRoleAssignment")
                    if pid != sp.object_id.lower():
                        raise bad_request("Not a valid reference update.")
                    rid = guid_field(body, "resourceId", "AppRoleAssignment")
                    resource = tenant.visible_sp(rid)
                    if resource is None:
                        raise bad_request("Not a valid reference update.")
                else:
                    resource = sp
                item = assignment_json(tenant, grant_app_role(tenant, resource, body))
            return entity_response(ctx, request, item, entity=ASSIGNMENTS, context=context(sp),
                                   status=201)

        async def get_one(request: Request, caller: Caller) -> Response:
            require(caller, READ_ROLES)
            with tenant.lock:
                sp = find_sp(tenant, request)
                item = assignment_json(tenant, one(sp, request.path_params["assignment_id"]))
            return entity_response(ctx, request, item, entity=ASSIGNMENTS, context=context(sp))

        async def delete_one(request: Request, caller: Caller) -> Response:
            require(caller, ASSIGN_ROLES, READ_ROLES)
            with tenant.lock:
                sp = find_sp(tenant, request)
                found = one(sp, request.path_params["assignment_id"])
                del tenant.app_role_assignments[found.id]
            return Response(status_code=204)

        out: list[BaseRoute] = []
        for prefix in ("/v1.0/servicePrincipals/{id}", "/v1.0/servicePrincipals(appId='{app_id}')"):
            out.append(route(f"{prefix}/{relation}", {"GET": list_all, "POST": create}))
            out.append(route(f"{prefix}/{relation}/{{assignment_id}}",
                             {"GET": get_one, "DELETE": delete_one}))
        return out

    # -- sign-in logs (beta)

    def sign_ins_allowed(caller: Caller) -> None:
        require(caller, AUDIT_ROLES)
        if tenant.licence not in ("P1", "P2"):
            raise SimError(403, LICENCE_CODE, LICENCE_MESSAGE)

    async def list_sign_ins(request: Request, caller: Caller) -> Response:
        sign_ins_allowed(caller)
        unknown = sorted({k for k in request.query_params if k.startswith("$")}
                         - SIGN_IN_OPTIONS)
        if unknown:
            raise bad_request(f"Query option '{unknown[0][:40]}' is not supported on "
                              "auditLogs/signIns.", "Request_UnsupportedQuery")
        text = request.query_params.get("$filter")
        try:
            predicate = parse_sign_in_filter(text) if text else None
        except FilterError as exc:
            raise bad_request(exc.message, exc.code) from None
        size = sign_in_page_size(request)
        with tenant.lock:
            tenant.catch_up_sign_ins()
            events = tenant.sign_ins.select(predicate, utcnow(), tenant.sign_in_delay)
        try:
            page, more = page_after(events, request.query_params.get("$skiptoken"), size)
        except SkipTokenError:
            raise expired_page_token() from None
        body: Json = {"@odata.context": f"{ctx.base_url}/beta/$metadata#auditLogs/signIns"}
        if more:
            body["@odata.nextLink"] = next_link(ctx, request, skiptoken_after(page[-1]))
        body["value"] = [e.as_graph() for e in page]
        return GraphJSONResponse(body)

    async def get_sign_in(request: Request, caller: Caller) -> Response:
        sign_ins_allowed(caller)
        wanted = str(request.path_params["id"]).lower()
        with tenant.lock:
            tenant.catch_up_sign_ins()
            found = next((e for e in tenant.sign_ins.select(None, utcnow(),
                                                            tenant.sign_in_delay)
                          if e.id == wanted), None)
        if found is None:
            raise not_found(wanted)
        body = {"@odata.context": f"{ctx.base_url}/beta/$metadata#auditLogs/signIns/$entity"}
        return GraphJSONResponse(body | found.as_graph())

    async def unknown_segment(request: Request, caller: Caller) -> Response:
        segment = str(request.path_params["rest"]).split("/")[0].split("(")[0]
        raise bad_request(f"Resource not found for the segment '{segment}'.", "BadRequest")

    any_method = dict.fromkeys(ALL_METHODS, unknown_segment)
    return [
        route("/v1.0/applications", {"GET": list_applications}),
        route("/v1.0/applications(appId='{app_id}')", {"GET": get_application}),
        route("/v1.0/applications/{id}", {"GET": get_application}),
        route("/v1.0/applications/{id}/owners", {"GET": list_owners}),
        route("/v1.0/applications(appId='{app_id}')/owners", {"GET": list_owners}),
        route("/v1.0/applications/{id}/addPassword", {"POST": add_password}),
        route("/v1.0/applications/{id}/removePassword", {"POST": remove_password}),
        # The alternate key (learn.microsoft.com/graph/api/application-addpassword: "POST
        # /applications(appId='{appId}')/addPassword"), as Graph serves it.
        route("/v1.0/applications(appId='{app_id}')/addPassword", {"POST": add_password}),
        route("/v1.0/applications(appId='{app_id}')/removePassword", {"POST": remove_password}),
        route("/v1.0/servicePrincipals", {"GET": list_sps}),
        route("/v1.0/servicePrincipals(appId='{app_id}')", {"GET": get_sp, "PATCH": patch_sp}),
        route("/v1.0/servicePrincipals/{id}", {"GET": get_sp, "PATCH": patch_sp}),
        *assignment_routes("appRoleAssignments", "principal"),
        *assignment_routes("appRoleAssignedTo", "resource"),
        route("/v1.0/{rest:path}", any_method),
        route("/beta/auditLogs/signIns", {"GET": list_sign_ins}),
        route("/beta/auditLogs/signIns/{id}", {"GET": get_sign_in}),
        route("/beta/{rest:path}", any_method),
    ]

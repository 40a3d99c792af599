"""Adapter for Microsoft Graph: a principal by app id, its password credentials and app roles.

Graph returns the credential's `hint` (first three characters) and never its text; that is all
the scanner needs to tell which credential an app holds.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.graph_service_client import GraphServiceClient

from migrator.cloud.errors import AzureCallError
from migrator.cloud.factory import ClientFactory
from migrator.cloud.records import AppRoleGrantRecord, PasswordCredentialRecord, PrincipalRecord
from migrator.cloud.web import sign_in_error


def _graph_error(what: str, exc: ODataError) -> AzureCallError:
    error = exc.error
    message = (error.message if error is not None else None) or str(exc)
    code = error.code if error is not None else None
    return AzureCallError(what, exc.response_status_code, code, str(message).splitlines()[0])


IN_FILTER_LIMIT = 15
# Graph returns at most 20 objects of an `$expand`ed relationship of a directory object, with no
# next link for the rest (known issue 13635): a principal showing 20 grants may hold more.
EXPAND_LIMIT = 20
# Only what the inventory uses: msgraph-sdk parses every property of every object it gets, and
# a whole application object costs ~10 ms of CPU to parse.
SP_FIELDS = ["id", "appId", "displayName", "accountEnabled", "servicePrincipalType",
             "passwordCredentials"]
APP_FIELDS = ["id", "appId", "passwordCredentials"]


def _list_request(graph: GraphServiceClient, kind: str, *, flt: str | None = None,
                  link: str | None = None) -> Awaitable[bytes]:
    """A page of service principals or applications as raw JSON, through the SDK's request
    builders and request adapter (auth, retries, middleware): msgraph's model parser costs
    ~10 ms of CPU per object, which dominated a 2,000-app scan, so bulk look-ups parse the JSON
    themselves into the project's records."""
    from msgraph.generated.applications.applications_request_builder import (
        ApplicationsRequestBuilder,
    )
    from msgraph.generated.service_principals.service_principals_request_builder import (
        ServicePrincipalsRequestBuilder,
    )

    if kind == "servicePrincipals":
        sp_builder = ServicePrincipalsRequestBuilder(graph.request_adapter, link) if link \
            else graph.service_principals
        builder_type = ServicePrincipalsRequestBuilder
        sp_params = builder_type.ServicePrincipalsRequestBuilderGetQueryParameters
        sp_query = sp_params(filter=flt, top=999, expand=["appRoleAssignments"],
                             select=SP_FIELDS)
        info = sp_builder.to_get_request_information(
            None if link else RequestConfiguration(query_parameters=sp_query))
    else:
        app_builder = ApplicationsRequestBuilder(graph.request_adapter, link) if link \
            else graph.applications
        app_query = ApplicationsRequestBuilder.ApplicationsRequestBuilderGetQueryParameters(
            filter=flt, top=999, select=APP_FIELDS)
        info = app_builder.to_get_request_information(
            None if link else RequestConfiguration(query_parameters=app_query))
    adapter: Any = graph.request_adapter
    result: Awaitable[bytes] = adapter.send_primitive_async(info, "bytes",
                                                            {"XXX": ODataError})
    return result


def _iso(value: object) -> str | None:
    """Graph's timestamps end in 'Z', which datetime.fromisoformat reads only from 3.11 on."""
    if not value:
        return None
    text = str(value)
    return text[:-1] + "+00:00" if text.endswith("Z") else text


def _assignments_request(graph: GraphServiceClient, *, object_id: str,
                         link: str | None = None) -> Awaitable[bytes]:
    """A page of a principal's app-role assignments as raw JSON (parsed by `_grants`, for the
    reason `_list_request` gives: a verify pass over 45 grants read them 45 times)."""
    builder = graph.service_principals.by_service_principal_id(object_id).app_role_assignments
    if link:
        builder = builder.with_url(link)
    adapter: Any = graph.request_adapter
    result: Awaitable[bytes] = adapter.send_primitive_async(
        builder.to_get_request_information(), "bytes", {"XXX": ODataError})
    return result


class GraphAdapter:
    """Principal look-ups, cached per app id and per resource: each is fetched once a scan."""

    def __init__(self, factory: ClientFactory) -> None:
        self.factory = factory
        self._resources: dict[str, tuple[str, str | None, dict[str, str]]] = {}
        self._lock = threading.Lock()

    def run(self, what: str, build: Callable[[GraphServiceClient], Awaitable[Any]]) -> Any:
        from azure.core.exceptions import ClientAuthenticationError

        try:
            return self.factory.graph_call(build)
        except ODataError as exc:
            raise _graph_error(what, exc) from None
        except ClientAuthenticationError as exc:
            raise sign_in_error(what, exc) from None
        except httpx.TransportError as exc:
            # No answer, after the transport's own resends (graph_transport): transient.
            detail = str(exc).splitlines()[0] if str(exc) else "no answer"
            raise AzureCallError(what, None, type(exc).__name__,
                                 f"the connection failed: {detail}") from None

    def warm(self) -> None:
        """Import the request builders and models a scan uses (msgraph-sdk imports them lazily,
        ~2.5 s at first use) and sign in to Graph, so a scan can do it while it reads ARM."""
        import importlib

        for module in (
            "msgraph.generated.service_principals_with_app_id."
            "service_principals_with_app_id_request_builder",
            "msgraph.generated.applications_with_app_id.applications_with_app_id_request_builder",
            "msgraph.generated.service_principals.item.app_role_assignments."
            "app_role_assignments_request_builder",
            "msgraph.generated.models.service_principal",
            "msgraph.generated.models.application",
            "msgraph.generated.models.app_role_assignment_collection_response",
        ):
            importlib.import_module(module)
        self.factory.graph()
        self.factory.credential.get_token(self.factory.profile.graph_scope)

    def principal(self, app_id: str) -> PrincipalRecord | None:
        """The service principal and application of an app id; None if there is none."""
        try:
            sp = self.run(f"look up service principal {app_id}",
                           lambda g: g.service_principals_with_app_id(app_id).get())
        except AzureCallError as exc:
            if exc.status == 404:
                return None
            raise
        try:
            app = self.run(f"look up application {app_id}",
                            lambda g: g.applications_with_app_id(app_id).get())
        except AzureCallError as exc:
            if exc.status != 404:
                raise
            app = None  # a principal of another tenant's app: no application object here
        return self._record(sp, app)

    def principals(self, app_ids: list[str]) -> dict[str, PrincipalRecord]:
        """Many principals at once: `appId in (…)` filters of 15 ids (Graph's limit for `in`)
        cost two requests per 15 principals instead of two per principal. Missing ones are
        simply absent from the result."""
        sps: dict[str, dict[str, Any]] = {}
        apps: dict[str, dict[str, Any]] = {}
        for start in range(0, len(app_ids), IN_FILTER_LIMIT):
            chunk = app_ids[start:start + IN_FILTER_LIMIT]
            flt = "appId in (" + ",".join(f"'{a}'" for a in chunk) + ")"
            for sp in self._all(f"look up {len(chunk)} service principals",
                                "servicePrincipals", flt):
                sps[str(sp.get("appId", "")).lower()] = sp
            for app in self._all(f"look up {len(chunk)} applications", "applications", flt):
                apps[str(app.get("appId", "")).lower()] = app
        return {app_id: self._record_from_json(sp, apps.get(app_id))
                for app_id, sp in sps.items()}

    def _all(self, what: str, kind: str, flt: str) -> list[dict[str, Any]]:
        page = json.loads(self.run(what, functools.partial(_list_request, kind=kind, flt=flt)))
        items = list(page.get("value") or [])
        while page.get("@odata.nextLink"):
            page = json.loads(self.run(what, functools.partial(
                _list_request, kind=kind, link=page["@odata.nextLink"])))
            items += list(page.get("value") or [])
        return items

    def _record_from_json(self, sp: dict[str, Any], app: dict[str, Any] | None
                          ) -> PrincipalRecord:
        creds = [*((app or {}).get("passwordCredentials") or []),
                 *(sp.get("passwordCredentials") or [])]
        expanded = list(sp.get("appRoleAssignments") or [])
        if len(expanded) >= EXPAND_LIMIT:  # perhaps cut short: read them all, page by page
            grants = self._grants(str(sp.get("id")))
        else:
            grants = self._grants_from([
                (str(a.get("id")), str(a.get("resourceId")), str(a.get("appRoleId")))
                for a in expanded])
        enabled = sp.get("accountEnabled")
        return PrincipalRecord(
            app_id=str(sp.get("appId")), object_id=str(sp.get("id")),
            display_name=str(sp.get("displayName")),
            enabled=True if enabled is None else bool(enabled),
            kind=str(sp.get("servicePrincipalType") or "Application"),
            application_object_id=str(app["id"]) if app and app.get("id") else None,
            password_credentials=tuple(
                PasswordCredentialRecord(
                    key_id=str(c.get("keyId")), hint=c.get("hint"),
                    display_name=c.get("displayName"), start=_iso(c.get("startDateTime")),
                    end=_iso(c.get("endDateTime")))
                for c in creds),
            app_role_grants=grants,
        )

    def _record(self, sp: Any, app: Any) -> PrincipalRecord:
        grants = self._grants(str(sp.id))
        creds = [*(app.password_credentials or [] if app else []),
                 *(sp.password_credentials or [])]
        return PrincipalRecord(
            app_id=str(sp.app_id), object_id=str(sp.id), display_name=str(sp.display_name),
            enabled=bool(sp.account_enabled if sp.account_enabled is not None else True),
            kind=str(sp.service_principal_type or "Application"),
            application_object_id=str(app.id) if app else None,
            password_credentials=tuple(
                PasswordCredentialRecord(
                    key_id=str(c.key_id), hint=c.hint, display_name=c.display_name,
                    start=c.start_date_time.isoformat() if c.start_date_time else None,
                    end=c.end_date_time.isoformat() if c.end_date_time else None,
                ) for c in creds),
            app_role_grants=grants,
        )

    def _grants(self, object_id: str) -> tuple[AppRoleGrantRecord, ...]:
        what = f"list app role assignments of {object_id}"
        page = json.loads(self.run(what, functools.partial(_assignments_request,
                                                            object_id=object_id)))
        items = list(page.get("value") or [])
        while page.get("@odata.nextLink"):
            page = json.loads(self.run(what, functools.partial(
                _assignments_request, object_id=object_id, link=page["@odata.nextLink"])))
            items += list(page.get("value") or [])
        return self._grants_from([
            (str(a.get("id")), str(a.get("resourceId")), str(a.get("appRoleId")))
            for a in items])

    def _grants_from(self, items: list[tuple[str, str, str]]
                     ) -> tuple[AppRoleGrantRecord, ...]:
        """(assignment id, resource principal id, app role id) -> grants with role names."""
        out = []
        for assignment_id, resource_id, app_role_id in items:
            resource = self._resource(resource_id)
            out.append(AppRoleGrantRecord(
                id=assignment_id, resource_id=resource_id, resource_app_id=resource[1],
                resource_name=resource[0], app_role_id=app_role_id,
                app_role_value=resource[2].get(app_role_id),
            ))
        return tuple(sorted(out, key=lambda g: (g.resource_name, g.app_role_value or "")))

    def _resource(self, object_id: str) -> tuple[str, str | None, dict[str, str]]:
        """A resource principal's name, app id and app roles (id -> value), fetched once."""
        with self._lock:
            if object_id in self._resources:
                return self._resources[object_id]
        sp = self.run(f"look up resource principal {object_id}",
                       lambda g: g.service_principals.by_service_principal_id(object_id).get())
        roles = {str(r.id): str(r.value) for r in (sp.app_roles or [])}
        found = (str(sp.display_name), str(sp.app_id) if sp.app_id else None, roles)
        with self._lock:
            self._resources[object_id] = found
        return found

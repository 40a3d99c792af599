"""Adapter for Microsoft Graph: a principal by app id, its password credentials and app roles.

Graph returns the credential's `hint` (first three characters) and never its text; that is all
the scanner needs to tell which credential an app holds.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.graph_service_client import GraphServiceClient

from migrator.cloud.errors import AzureCallError, SignInError
from migrator.cloud.factory import ClientFactory
from migrator.cloud.records import AppRoleGrantRecord, PasswordCredentialRecord, PrincipalRecord
from migrator.cloud.web import sign_in_reason


def _graph_error(what: str, exc: ODataError) -> AzureCallError:
    error = exc.error
    message = (error.message if error is not None else None) or str(exc)
    code = error.code if error is not None else None
    return AzureCallError(what, exc.response_status_code, code, str(message).splitlines()[0])


IN_FILTER_LIMIT = 15


def _list_sps(graph: GraphServiceClient, *, flt: str) -> Awaitable[Any]:
    from msgraph.generated.service_principals.service_principals_request_builder import (
        ServicePrincipalsRequestBuilder as Builder,
    )

    query = Builder.ServicePrincipalsRequestBuilderGetQueryParameters(
        filter=flt, top=999, expand=["appRoleAssignments"])
    config = RequestConfiguration(query_parameters=query)
    return graph.service_principals.get(request_configuration=config)


def _list_apps(graph: GraphServiceClient, *, flt: str) -> Awaitable[Any]:
    from msgraph.generated.applications.applications_request_builder import (
        ApplicationsRequestBuilder as Builder,
    )

    query = Builder.ApplicationsRequestBuilderGetQueryParameters(filter=flt, top=999)
    config = RequestConfiguration(query_parameters=query)
    return graph.applications.get(request_configuration=config)


def _next_page(graph: GraphServiceClient, *, link: str, kind: type) -> Awaitable[Any]:
    from msgraph.generated.applications.applications_request_builder import (
        ApplicationsRequestBuilder,
    )
    from msgraph.generated.models.application_collection_response import (
        ApplicationCollectionResponse,
    )

    if kind is ApplicationCollectionResponse:
        return ApplicationsRequestBuilder(graph.request_adapter, link).get()
    from msgraph.generated.service_principals.service_principals_request_builder import (
        ServicePrincipalsRequestBuilder,
    )

    return ServicePrincipalsRequestBuilder(graph.request_adapter, link).get()


def _follow(graph: GraphServiceClient, *, object_id: str, link: str) -> Awaitable[Any]:
    return (graph.service_principals.by_service_principal_id(object_id)
            .app_role_assignments.with_url(link).get())


class GraphAdapter:
    """Principal look-ups, cached per app id and per resource: each is fetched once a scan."""

    def __init__(self, factory: ClientFactory) -> None:
        self.factory = factory
        self._resources: dict[str, tuple[str, str | None, dict[str, str]]] = {}
        self._lock = threading.Lock()

    def _run(self, what: str, build: Callable[[GraphServiceClient], Awaitable[Any]]) -> Any:
        from azure.core.exceptions import ClientAuthenticationError

        try:
            return self.factory.graph_call(build)
        except ODataError as exc:
            raise _graph_error(what, exc) from None
        except ClientAuthenticationError as exc:
            raise SignInError(f"{what}: sign-in failed: {sign_in_reason(exc)}") from None

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
            sp = self._run(f"look up service principal {app_id}",
                           lambda g: g.service_principals_with_app_id(app_id).get())
        except AzureCallError as exc:
            if exc.status == 404:
                return None
            raise
        try:
            app = self._run(f"look up application {app_id}",
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
        sps: dict[str, Any] = {}
        apps: dict[str, Any] = {}
        for start in range(0, len(app_ids), IN_FILTER_LIMIT):
            chunk = app_ids[start:start + IN_FILTER_LIMIT]
            flt = "appId in (" + ",".join(f"'{a}'" for a in chunk) + ")"
            for sp in self._all(f"look up {len(chunk)} service principals",
                                functools.partial(_list_sps, flt=flt)):
                sps[str(sp.app_id).lower()] = sp
            for app in self._all(f"look up {len(chunk)} applications",
                                 functools.partial(_list_apps, flt=flt)):
                apps[str(app.app_id).lower()] = app
        return {app_id: self._record(sp, apps.get(app_id)) for app_id, sp in sps.items()}

    def _all(self, what: str, first: Callable[[GraphServiceClient], Awaitable[Any]]
             ) -> list[Any]:
        page = self._run(what, first)
        items = list(page.value or [])
        while page.odata_next_link:
            page = self._run(what, functools.partial(_next_page, link=page.odata_next_link,
                                                     kind=type(page)))
            items += list(page.value or [])
        return items

    def _record(self, sp: Any, app: Any) -> PrincipalRecord:
        expanded = sp.app_role_assignments  # present when the query had $expand
        grants = (self._grants_from(expanded) if expanded is not None
                  else self._grants(str(sp.id)))
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
        page = self._run(f"list app role assignments of {object_id}",
                         lambda g: g.service_principals.by_service_principal_id(object_id)
                         .app_role_assignments.get())
        items = list(page.value or [])
        while page.odata_next_link:
            page = self._run("follow app role assignments", functools.partial(
                _follow, object_id=object_id, link=page.odata_next_link))
            items += list(page.value or [])
        return self._grants_from(items)

    def _grants_from(self, items: list[Any]) -> tuple[AppRoleGrantRecord, ...]:
        out = []
        for a in items:
            resource = self._resource(str(a.resource_id))
            out.append(AppRoleGrantRecord(
                id=str(a.id), resource_id=str(a.resource_id), resource_app_id=resource[1],
                resource_name=resource[0], app_role_id=str(a.app_role_id),
                app_role_value=resource[2].get(str(a.app_role_id)),
            ))
        return tuple(sorted(out, key=lambda g: (g.resource_name, g.app_role_value or "")))

    def _resource(self, object_id: str) -> tuple[str, str | None, dict[str, str]]:
        """A resource principal's name, app id and app roles (id -> value), fetched once."""
        with self._lock:
            if object_id in self._resources:
                return self._resources[object_id]
        sp = self._run(f"look up resource principal {object_id}",
                       lambda g: g.service_principals.by_service_principal_id(object_id).get())
        roles = {str(r.id): str(r.value) for r in (sp.app_roles or [])}
        found = (str(sp.display_name), str(sp.app_id) if sp.app_id else None, roles)
        with self._lock:
            self._resources[object_id] = found
        return found

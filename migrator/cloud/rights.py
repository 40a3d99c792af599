"""Adapters for what principals may do in ARM: role assignments, role names, Key Vault policies.

Listing is per subscription, once, and indexed by principal in memory: one paged call per
subscription instead of one per principal and subscription.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from migrator.cloud.factory import ClientFactory
from migrator.cloud.records import (
    AccessPolicyRecord,
    Permission,
    RoleAssignmentRecord,
    RoleDataActions,
    VaultRecord,
)
from migrator.cloud.web import arm_call

PERMISSIONS_API_VERSION = "2022-04-01"
_SUBSCRIPTION = re.compile(r"^/subscriptions/([^/]+)", re.IGNORECASE)


def _guid(resource_id: str | None) -> str:
    return (resource_id or "").rstrip("/").rsplit("/", 1)[-1].lower()


def _permissions(permissions: object, name: str) -> tuple[str, ...]:
    """One permission list of an access policy. azure-mgmt-keyvault's models are mappings, so
    `permissions.keys` is the dict method: read them by their JSON names."""
    if permissions is None:
        return ()
    try:
        items = permissions[name]  # type: ignore[index]
    except (KeyError, TypeError):
        items = getattr(permissions, name, None)
    return tuple(str(getattr(x, "value", x)) for x in (items or []))


class RightsAdapter:
    def __init__(self, factory: ClientFactory) -> None:
        self.factory = factory

    def role_assignments(self, subscription_id: str) -> list[RoleAssignmentRecord]:
        """Every assignment in the subscription (and inherited from above) the caller can read."""
        client = self.factory.authorization(subscription_id)
        return arm_call(f"list role assignments in subscription {subscription_id}", lambda: [
            RoleAssignmentRecord(
                id=str(a.id), scope=str(a.scope),
                role_definition_id=_guid(a.role_definition_id),
                principal_id=str(a.principal_id).lower(),
                principal_type=str(getattr(a.principal_type, "value", a.principal_type)),
                condition=a.condition or None, condition_version=a.condition_version or None,
            )
            for a in client.role_assignments.list_for_subscription()
        ])

    def role_names(self, subscription_id: str) -> dict[str, str]:
        """Role definition GUID -> role name, for reports."""
        client = self.factory.authorization(subscription_id)
        return arm_call(f"list role definitions in subscription {subscription_id}", lambda: {
            _guid(d.id): str(d.role_name)
            for d in client.role_definitions.list(f"/subscriptions/{subscription_id}")
        })

    def vaults(self, subscription_id: str) -> list[VaultRecord]:
        client = self.factory.keyvault(subscription_id)
        out: list[VaultRecord] = []
        for vault in arm_call(f"list key vaults in subscription {subscription_id}",
                              lambda: list(client.vaults.list_by_subscription())):
            props = vault.properties
            policies = tuple(
                AccessPolicyRecord(
                    object_id=str(p.object_id).lower(),
                    secrets=_permissions(p.permissions, "secrets"),
                    keys=_permissions(p.permissions, "keys"),
                    certificates=_permissions(p.permissions, "certificates"),
                )
                for p in (props.access_policies or [] if props else [])
            )
            out.append(VaultRecord(
                id=str(vault.id), name=str(vault.name), subscription_id=subscription_id,
                rbac=bool(props.enable_rbac_authorization) if props else False,
                access_policies=policies,
                uri=str(props.vault_uri) if props and props.vault_uri else None,
            ))
        return out

    def role_data_actions(self, subscription_id: str) -> dict[str, RoleDataActions]:
        """Role definition GUID -> its data actions: whether a role lets its holder write a
        Key Vault secret on an RBAC vault (asked only where a plan needs to know)."""
        client = self.factory.authorization(subscription_id)

        def actions(definition: object, name: str) -> tuple[str, ...]:
            return tuple(str(a) for p in (getattr(definition, "permissions", None) or [])
                         for a in (getattr(p, name, None) or []))

        return arm_call(f"list role definitions in subscription {subscription_id}", lambda: {
            _guid(d.id): RoleDataActions(actions(d, "data_actions"),
                                         actions(d, "not_data_actions"))
            for d in client.role_definitions.list(f"/subscriptions/{subscription_id}")
        })

    def permissions(self, scope: str) -> tuple[Permission, ...]:
        """The caller's effective ARM permissions at a scope: `GET {scope}/providers/
        Microsoft.Authorization/permissions`, one entry per role it holds there or above.
        azure-mgmt-authorization serves it only for resource groups and resources, and ARM
        also for a subscription, so it is sent through an SDK client's pipeline (the Web
        one: sign-in, retries, pacing, the call log) for any scope, and its pages followed
        (a next link is followed on the same endpoint, never to another host)."""
        from azure.core.exceptions import HttpResponseError
        from azure.core.rest import HttpRequest
        from azure.mgmt.core.exceptions import ARMErrorFormat

        m = _SUBSCRIPTION.match(scope)
        if m is None:
            raise ValueError(f"not a subscription, resource group or resource scope: {scope}")
        web = self.factory.web(m.group(1))

        def read() -> tuple[Permission, ...]:
            out: list[Permission] = []
            url: str | None = scope.rstrip("/") + "/providers/Microsoft.Authorization/permissions"
            params: dict[str, str] | None = {"api-version": PERMISSIONS_API_VERSION}
            while url:
                response = web.send_request(HttpRequest("GET", url, params=params))
                if response.status_code != 200:
                    raise HttpResponseError(response=response, error_format=ARMErrorFormat)
                body = response.json()
                out += [Permission(
                    actions=tuple(str(a) for a in e.get("actions") or ()),
                    not_actions=tuple(str(a) for a in e.get("notActions") or ()),
                    data_actions=tuple(str(a) for a in e.get("dataActions") or ()),
                    not_data_actions=tuple(str(a) for a in e.get("notDataActions") or ()),
                ) for e in body.get("value") or ()]
                link = body.get("nextLink")
                url, params = (urlsplit(link)._replace(scheme="", netloc="").geturl(), None) \
                    if link else (None, None)
            return tuple(out)

        return arm_call(f"read the operator's permissions at {scope}", read)

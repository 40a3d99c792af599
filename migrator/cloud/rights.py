"""Adapters for what principals may do in ARM: role assignments, role names, Key Vault policies.

Listing is per subscription, once, and indexed by principal in memory: one paged call per
subscription instead of one per principal and subscription.
"""

from __future__ import annotations

from migrator.cloud.factory import ClientFactory
from migrator.cloud.records import (
    AccessPolicyRecord,
    RoleAssignmentRecord,
    RoleDataActions,
    VaultRecord,
)
from migrator.cloud.web import arm_call


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

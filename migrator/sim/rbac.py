"""Azure RBAC as the simulator enforces it: built-in role definitions and action matching.

Role ids and action lists are Azure's built-in ones (trimmed to what the simulator serves), so a
plan that copies "Storage Blob Data Reader" by id copies the same role as in Azure.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class RoleDefinition:
    id: str  # the GUID
    name: str  # roleName
    description: str
    actions: tuple[str, ...] = ()
    not_actions: tuple[str, ...] = ()
    data_actions: tuple[str, ...] = ()
    not_data_actions: tuple[str, ...] = ()

    def allows(self, action: str, *, data: bool) -> bool:
        allow, deny = (
            (self.data_actions, self.not_data_actions)
            if data
            else (self.actions, self.not_actions)
        )
        return any(_match(p, action) for p in allow) and not any(_match(p, action) for p in deny)


@functools.lru_cache(maxsize=4096)
def _pattern(pattern: str) -> re.Pattern[str]:
    """Azure's action wildcards: `*` spans any text, slashes included, and a `*` segment may
    also be empty, so `…/userAssignedIdentities/*/assign/action` covers
    `…/userAssignedIdentities/assign/action` and `*/read` covers every read."""
    parts = pattern.lower().split("/")
    out = ""
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "*":
            out += ".*" if last else "(?:.*/)?"
        else:
            out += ".*".join(re.escape(p) for p in part.split("*")) + ("" if last else "/")
    return re.compile(out)


def action_matches(pattern: str, action: str) -> bool:
    """Whether `action` is one that the role-definition `pattern` (with wildcards) names."""
    return _pattern(pattern).fullmatch(action.lower()) is not None


_match = action_matches


_KV_SECRETS = "Microsoft.KeyVault/vaults/secrets"
BUILTIN_ROLES: tuple[RoleDefinition, ...] = (
    RoleDefinition(
        "8e3af657-a8ff-443c-a75c-2fe8c4bcb635", "Owner",
        "Grants full access to manage all resources, including the ability to assign roles.",
        actions=("*",),
    ),
    RoleDefinition(
        "b24988ac-6180-42a0-ab88-20f7382dd24c", "Contributor",
        "Grants full access to manage all resources, but does not allow you to assign roles.",
        actions=("*",),
        not_actions=(
            "Microsoft.Authorization/*/Delete", "Microsoft.Authorization/*/Write",
            "Microsoft.Authorization/elevateAccess/Action",
        ),
    ),
    RoleDefinition(
        "acdd72a7-3385-48ef-bd42-f606fba81ae7", "Reader",
        "View all resources, but does not allow you to make any changes.",
        actions=("*/read",),
    ),
    RoleDefinition(
        "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9", "User Access Administrator",
        "Lets you manage user access to Azure resources.",
        actions=("*/read", "Microsoft.Authorization/*", "Microsoft.Support/*"),
    ),
    RoleDefinition(
        "f58310d9-a9f6-439a-9e8d-f62e7b41a168", "Role Based Access Control Administrator",
        "Manage access to Azure resources by assigning roles using Azure RBAC.",
        actions=(
            "Microsoft.Authorization/roleAssignments/write",
            "Microsoft.Authorization/roleAssignments/delete", "*/read",
        ),
    ),
    RoleDefinition(
        "de139f84-1756-47ae-9be6-808fbbe84772", "Website Contributor",
        "Lets you manage websites (not web plans), but not access to them.",
        actions=(
            "Microsoft.Authorization/*/read", "Microsoft.Web/sites/*",
            "Microsoft.Resources/subscriptions/resourceGroups/read",
        ),
    ),
    RoleDefinition(
        "e40ec5ca-96e0-45a2-b4ff-59039f2c2b59", "Managed Identity Contributor",
        "Create, Read, Update, and Delete User Assigned Identity",
        actions=(
            "Microsoft.ManagedIdentity/userAssignedIdentities/read",
            "Microsoft.ManagedIdentity/userAssignedIdentities/write",
            "Microsoft.ManagedIdentity/userAssignedIdentities/delete",
            "Microsoft.Authorization/*/read",
        ),
    ),
    RoleDefinition(
        "f1a07417-d97a-45cb-824c-7a7467783830", "Managed Identity Operator",
        "Read and Assign User Assigned Identity",
        actions=(
            "Microsoft.ManagedIdentity/userAssignedIdentities/*/read",
            "Microsoft.ManagedIdentity/userAssignedIdentities/*/assign/action",
            "Microsoft.Authorization/*/read",
        ),
    ),
    RoleDefinition(
        "f25e0fa2-a7c8-4377-a976-54943a77a395", "Key Vault Contributor",
        "Lets you manage key vaults, but not access to them.",
        actions=("Microsoft.Authorization/*/read", "Microsoft.KeyVault/*"),
        not_actions=("Microsoft.KeyVault/locations/deletedVaults/purge/action",),
    ),
    RoleDefinition(
        "00482a5a-887f-4fb3-b363-3b7fe8e74483", "Key Vault Administrator",
        "Perform all data plane operations on a key vault and all objects in it.",
        actions=("Microsoft.Authorization/*/read", "Microsoft.KeyVault/checkNameAvailability/read",
                 "Microsoft.KeyVault/vaults/*/read"),
        data_actions=("Microsoft.KeyVault/vaults/*",),
    ),
    RoleDefinition(
        "4633458b-17de-408a-b874-0445c86b69e6", "Key Vault Secrets User",
        "Read secret contents.",
        data_actions=(f"{_KV_SECRETS}/getSecret/action", f"{_KV_SECRETS}/readMetadata/action"),
    ),
    RoleDefinition(
        "b86a8fe4-44ce-4948-aee5-eccb2c155cd7", "Key Vault Secrets Officer",
        "Perform any action on the secrets of a key vault.",
        actions=("Microsoft.Authorization/*/read", "Microsoft.KeyVault/vaults/*/read"),
        data_actions=(f"{_KV_SECRETS}/*",),
    ),
    RoleDefinition(
        "21090545-7ca7-4776-b22c-e363652d74d2", "Key Vault Reader",
        "Read metadata of key vaults and its certificates, keys, and secrets.",
        actions=("Microsoft.Authorization/*/read", "Microsoft.KeyVault/vaults/*/read"),
        data_actions=("Microsoft.KeyVault/vaults/*/read", f"{_KV_SECRETS}/readMetadata/action"),
    ),
    RoleDefinition(
        "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1", "Storage Blob Data Reader",
        "Read and list Azure Storage containers and blobs.",
        actions=("Microsoft.Storage/storageAccounts/blobServices/containers/read",
                 "Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action"),
        data_actions=("Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read",),
    ),
    RoleDefinition(
        "ba92f5b4-2d11-453d-a403-e96b0029c9fe", "Storage Blob Data Contributor",
        "Read, write, and delete Azure Storage containers and blobs.",
        actions=("Microsoft.Storage/storageAccounts/blobServices/containers/*",
                 "Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action"),
        data_actions=("Microsoft.Storage/storageAccounts/blobServices/containers/blobs/*",),
    ),
    RoleDefinition(
        "b7e6dc6d-f1e8-4753-8033-0f276bb0955b", "Storage Blob Data Owner",
        "Full access to Azure Storage blob containers and data, including assigning POSIX access.",
        actions=("Microsoft.Storage/storageAccounts/blobServices/containers/*",
                 "Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action"),
        data_actions=("Microsoft.Storage/storageAccounts/blobServices/containers/blobs/*",),
    ),
    RoleDefinition(
        "19e7f393-937e-4f77-808e-94535e297925", "Storage Queue Data Reader",
        "Read and list Azure Storage queues and queue messages.",
        actions=("Microsoft.Storage/storageAccounts/queueServices/queues/read",),
        data_actions=("Microsoft.Storage/storageAccounts/queueServices/queues/messages/read",),
    ),
    RoleDefinition(
        "974c5e8b-45b9-4653-ba55-5f855dd0fb88", "Storage Queue Data Contributor",
        "Read, write, and delete Azure Storage queues and queue messages.",
        actions=("Microsoft.Storage/storageAccounts/queueServices/queues/*",),
        data_actions=("Microsoft.Storage/storageAccounts/queueServices/queues/messages/*",),
    ),
    RoleDefinition(
        "4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0", "Azure Service Bus Data Receiver",
        "Allows for receive access to Azure Service Bus resources.",
        actions=("Microsoft.ServiceBus/*/queues/read", "Microsoft.ServiceBus/*/topics/read",
                 "Microsoft.ServiceBus/*/topics/subscriptions/read"),
        data_actions=("Microsoft.ServiceBus/*/receive/action",),
    ),
    RoleDefinition(
        "69a216fc-b8fb-44d8-bc22-1f3c2cd27a39", "Azure Service Bus Data Sender",
        "Allows for send access to Azure Service Bus resources.",
        actions=("Microsoft.ServiceBus/*/queues/read", "Microsoft.ServiceBus/*/topics/read",
                 "Microsoft.ServiceBus/*/topics/subscriptions/read"),
        data_actions=("Microsoft.ServiceBus/*/send/action",),
    ),
)

ROLES_BY_NAME: dict[str, RoleDefinition] = {r.name.lower(): r for r in BUILTIN_ROLES}
ROLES_BY_ID: dict[str, RoleDefinition] = {r.id: r for r in BUILTIN_ROLES}


def is_data_action(action: str) -> bool:
    """Data-plane actions (blob reads, secret gets) are matched against dataActions only."""
    lowered = action.lower()
    return any(
        marker in lowered
        for marker in ("/blobs/", "/messages/", "/secrets/", "/keys/", "/certificates/",
                       "/receive/action", "/send/action")
    )


def scope_covers(assigned: str, target: str) -> bool:
    """An assignment at `assigned` applies to `target` and everything below it."""
    a = assigned.rstrip("/").lower()
    t = target.rstrip("/").lower()
    return a in ("", t) or t.startswith(a + "/")

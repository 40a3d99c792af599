"""Whether the operator may write a new version of a vault secret (issue 11, item 2): the
plan holds the revoke of a credential whose Key Vault copy a rollback could not replace.
Access-policy vaults need the `set` secret permission; RBAC vaults a role at the vault or
above whose data actions allow setSecret (AZURE-FACTS: Key Vault Secrets Officer holds
`Microsoft.KeyVault/vaults/secrets/*`; Key Vault Secrets User only `.../getSecret/action`)."""

from __future__ import annotations

import pytest

from migrator.cloud.records import (
    AccessPolicyRecord,
    RoleAssignmentRecord,
    RoleDataActions,
    VaultRecord,
)
from migrator.execute.rewrite import repin_key_vault_reference
from migrator.scan import vault_write_access

OPERATOR = "0f0f0f0f-1111-2222-3333-444444444444"
SUB = "/subscriptions/00000000-0000-0000-0000-000000000001"
VAULT_ID = f"{SUB}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv"
OFFICER, USER, OWNER = "b86a8fe4", "4633458b", "8e3af657"
DEFINITIONS = {
    OFFICER: RoleDataActions(("Microsoft.KeyVault/vaults/secrets/*",), ()),
    USER: RoleDataActions(("Microsoft.KeyVault/vaults/secrets/getSecret/action",
                           "Microsoft.KeyVault/vaults/secrets/readMetadata/action"), ()),
    OWNER: RoleDataActions((), ()),  # Owner manages the vault, not its secrets
    "no-set": RoleDataActions(("Microsoft.KeyVault/*",),
                              ("Microsoft.KeyVault/vaults/secrets/setSecret/action",)),
}


def _vault(rbac: bool, *policies: AccessPolicyRecord) -> VaultRecord:
    return VaultRecord(VAULT_ID, "kv", "sub", rbac, policies)


def _policy(object_id: str, *secrets: str) -> AccessPolicyRecord:
    return AccessPolicyRecord(object_id, secrets, (), ())


def _assigned(role: str, scope: str) -> RoleAssignmentRecord:
    return RoleAssignmentRecord("a", scope, role, OPERATOR, "ServicePrincipal")


@pytest.mark.parametrize(("policies", "can"), [
    ([_policy(OPERATOR, "Get", "Set")], True),
    ([_policy(OPERATOR.upper(), "get", "set")], True),  # object ids compare in any case
    ([_policy(OPERATOR, "get", "list")], False),
    ([_policy("someone-else", "set")], False),
    ([], False),
])
def test_an_access_policy_vault_needs_the_set_permission(
        policies: list[AccessPolicyRecord], can: bool) -> None:
    allowed, reason = vault_write_access(_vault(False, *policies), OPERATOR, [], {})
    assert allowed is can and reason


@pytest.mark.parametrize(("role", "scope", "can"), [
    (OFFICER, VAULT_ID, True),
    (OFFICER, SUB, True),  # inherited from the subscription
    (OFFICER, f"{SUB}/resourceGroups/rg", True),
    (OFFICER, f"{SUB}/resourceGroups/rg-other", False),  # another resource group
    (OFFICER, f"{VAULT_ID}2", False),  # a vault whose name starts the same
    (USER, VAULT_ID, False),
    (OWNER, SUB, False),
    ("no-set", VAULT_ID, False),  # notDataActions win
])
def test_an_rbac_vault_needs_a_role_that_allows_set_secret(role: str, scope: str,
                                                          can: bool) -> None:
    allowed, reason = vault_write_access(
        _vault(True, _policy(OPERATOR, "set")), OPERATOR, [_assigned(role, scope)], DEFINITIONS)
    assert allowed is can, reason


def test_not_knowing_is_not_a_yes() -> None:
    assert vault_write_access(_vault(False, _policy(OPERATOR, "set")), None, [], {})[0] is None
    assert vault_write_access(_vault(True), OPERATOR, [_assigned(OFFICER, SUB)], None)[0] is None


OLD, NEW = "0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"


@pytest.mark.parametrize(("before", "after"), [
    (f"@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/s/{OLD})",
     f"@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/s/{NEW})"),
    (f"@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/s/{OLD}/)",
     f"@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/s/{NEW}/)"),
    (f"@Microsoft.KeyVault(VaultName=kv;SecretName=s;SecretVersion={OLD.upper()})",
     f"@Microsoft.KeyVault(VaultName=kv;SecretName=s;SecretVersion={NEW})"),
    (f"@Microsoft.KeyVault(VaultName=kv;SecretVersion = {OLD};SecretName=s)",
     f"@Microsoft.KeyVault(VaultName=kv;SecretVersion = {NEW};SecretName=s)"),
    # not pinned to that version, or not a reference: unchanged
    ("@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/s)",) * 2,
    (f"@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/{OLD}/other)",) * 2,
    (f"plain-{OLD}",) * 2,
])
def test_a_pinned_reference_is_repointed_at_the_new_version(before: str, after: str) -> None:
    assert repin_key_vault_reference(before, OLD, NEW) == after

"""The built-in role catalog in migrator/sim/builtin_roles.json, as Azure publishes it.

The data is copied from Microsoft's "Azure built-in roles" reference (the JSON block of each
role), so these tests check the file's shape, that it agrees with the roles the simulator
already serves by id, and a few ids and permissions worth pinning.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any, cast

import pytest

import migrator.sim

CATALOG = Path(migrator.sim.__file__).parent / "builtin_roles.json"
GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
LISTS = ("actions", "notActions", "dataActions", "notDataActions")
OPTIONAL = ("conditionVersion", "condition")

Role = dict[str, Any]

# (roleName, id) of every role in migrator/sim/rbac.py BUILTIN_ROLES when the catalog was made.
SIMULATED = (
    ("Owner", "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"),
    ("Contributor", "b24988ac-6180-42a0-ab88-20f7382dd24c"),
    ("Reader", "acdd72a7-3385-48ef-bd42-f606fba81ae7"),
    ("User Access Administrator", "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9"),
    ("Role Based Access Control Administrator", "f58310d9-a9f6-439a-9e8d-f62e7b41a168"),
    ("Website Contributor", "de139f84-1756-47ae-9be6-808fbbe84772"),
    ("Managed Identity Contributor", "e40ec5ca-96e0-45a2-b4ff-59039f2c2b59"),
    ("Managed Identity Operator", "f1a07417-d97a-45cb-824c-7a7467783830"),
    ("Key Vault Contributor", "f25e0fa2-a7c8-4377-a976-54943a77a395"),
    ("Key Vault Administrator", "00482a5a-887f-4fb3-b363-3b7fe8e74483"),
    ("Key Vault Secrets User", "4633458b-17de-408a-b874-0445c86b69e6"),
    ("Key Vault Secrets Officer", "b86a8fe4-44ce-4948-aee5-eccb2c155cd7"),
    ("Key Vault Reader", "21090545-7ca7-4776-b22c-e363652d74d2"),
    ("Storage Blob Data Reader", "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"),
    ("Storage Blob Data Contributor", "ba92f5b4-2d11-453d-a403-e96b0029c9fe"),
    ("Storage Blob Data Owner", "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"),
    ("Storage Queue Data Reader", "19e7f393-937e-4f77-808e-94535e297925"),
    ("Storage Queue Data Contributor", "974c5e8b-45b9-4653-ba55-5f855dd0fb88"),
    ("Azure Service Bus Data Receiver", "4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0"),
    ("Azure Service Bus Data Sender", "69a216fc-b8fb-44d8-bc22-1f3c2cd27a39"),
)


@functools.lru_cache(maxsize=1)
def _catalog() -> tuple[Role, ...]:
    data = json.loads(CATALOG.read_text(encoding="utf-8"))
    assert isinstance(data, list)
    return tuple(cast(Role, role) for role in data)


def _by_name() -> dict[str, Role]:
    return {cast(str, role["roleName"]): role for role in _catalog()}


def _role(name: str) -> Role:
    role = _by_name().get(name)
    assert role is not None, f"{name} is not in the catalog"
    return role


def _merged(role: Role, key: str) -> list[str]:
    """One permission list over every permission block of the role."""
    blocks = cast(list[dict[str, Any]], role["permissions"])
    return [cast(str, entry) for block in blocks for entry in block[key]]


def test_catalog_is_large_enough() -> None:
    assert len(_catalog()) >= 85


def test_file_is_sorted_by_role_name_and_two_space_indented() -> None:
    names = [cast(str, role["roleName"]) for role in _catalog()]
    assert names == sorted(names)
    text = CATALOG.read_text(encoding="utf-8")
    assert text == json.dumps(list(_catalog()), indent=2, ensure_ascii=False) + "\n"


def test_ids_are_unique_lowercase_guids() -> None:
    ids = [cast(str, role["id"]) for role in _catalog()]
    bad = [role_id for role_id in ids if GUID.fullmatch(role_id) is None]
    assert bad == []
    assert len(set(ids)) == len(ids)


def test_role_names_are_unique() -> None:
    names = [cast(str, role["roleName"]) for role in _catalog()]
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("role", _catalog(), ids=lambda role: cast(str, role["roleName"]))
def test_every_role_has_the_role_definition_shape(role: Role) -> None:
    assert list(role) == ["id", "roleName", "description", "permissions"]
    assert isinstance(role["roleName"], str) and role["roleName"].strip() == role["roleName"]
    assert isinstance(role["description"], str) and role["description"]
    blocks = role["permissions"]
    assert isinstance(blocks, list) and blocks
    for block in blocks:
        assert isinstance(block, dict)
        assert list(block)[: len(LISTS)] == list(LISTS)
        assert set(block) - set(LISTS) <= set(OPTIONAL)
        for key in LISTS:
            entries = block[key]
            assert isinstance(entries, list)
            for entry in entries:
                assert isinstance(entry, str) and entry and " " not in entry, (key, entry)
        if "condition" in block:
            assert block["conditionVersion"] == "2.0"
    assert _merged(role, "actions") or _merged(role, "dataActions")


@pytest.mark.parametrize(("name", "role_id"), SIMULATED)
def test_simulated_roles_keep_their_ids(name: str, role_id: str) -> None:
    assert _role(name)["id"] == role_id


def test_simulated_role_names_match_the_simulator() -> None:
    from migrator.sim.rbac import BUILTIN_ROLES

    served = {role.name: role.id for role in BUILTIN_ROLES}
    catalog = {cast(str, role["roleName"]): cast(str, role["id"]) for role in _catalog()}
    assert {name: catalog.get(name) for name in served} == served


@pytest.mark.parametrize(
    ("name", "role_id"),
    [
        ("Storage Blob Data Reader", "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"),
        ("Storage Blob Delegator", "db58b8e5-c6ad-4a2a-8342-4190687cbf4a"),
        ("Storage Table Data Contributor", "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"),
        ("AcrPull", "7f951dda-4ed3-4680-a7ca-43fe172d538d"),
        ("AcrPush", "8311e382-0749-4cb8-b61a-304f252e45ec"),
        ("Monitoring Metrics Publisher", "3913510d-42f4-4e42-8a64-420c390055eb"),
        ("Network Contributor", "4d97b98b-1d4f-4787-a291-c67834d212e7"),
        ("App Configuration Data Reader", "516239f1-63e1-4d78-a4de-a74fb236a071"),
        ("Cognitive Services OpenAI User", "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd"),
        ("Azure Kubernetes Service Cluster User Role", "4abbcc35-e782-43d8-92c5-2d3f1bd2253f"),
        ("Azure Event Hubs Data Sender", "2b629674-e913-4c01-ae53-ef4638d8f975"),
        ("SignalR App Server", "420fcaa2-552c-430f-98ca-3264be4806c7"),
        ("Key Vault Data Access Administrator", "8b54135c-b56d-4d72-a534-26097cfdc8d8"),
    ],
)
def test_spot_check_ids(name: str, role_id: str) -> None:
    assert _role(name)["id"] == role_id


@pytest.mark.parametrize(
    ("name", "key", "entry"),
    [
        ("Storage Blob Data Reader", "dataActions",
         "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read"),
        ("Storage Blob Data Reader", "actions",
         "Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action"),
        ("Storage Blob Data Owner", "dataActions",
         "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/*"),
        ("Storage Queue Data Message Sender", "dataActions",
         "Microsoft.Storage/storageAccounts/queueServices/queues/messages/add/action"),
        ("Key Vault Secrets User", "dataActions",
         "Microsoft.KeyVault/vaults/secrets/getSecret/action"),
        ("Key Vault Crypto Service Encryption User", "dataActions",
         "Microsoft.KeyVault/vaults/keys/unwrap/action"),
        ("Azure Service Bus Data Sender", "dataActions", "Microsoft.ServiceBus/*/send/action"),
        ("Azure Event Hubs Data Receiver", "dataActions", "Microsoft.EventHub/*/receive/action"),
        ("EventGrid Data Sender", "dataActions", "Microsoft.EventGrid/events/send/action"),
        ("App Configuration Data Owner", "dataActions",
         "Microsoft.AppConfiguration/configurationStores/*/write"),
        ("Search Index Data Reader", "dataActions",
         "Microsoft.Search/searchServices/indexes/documents/read"),
        ("Monitoring Metrics Publisher", "dataActions", "Microsoft.Insights/Metrics/Write"),
        ("Managed Identity Operator", "actions",
         "Microsoft.ManagedIdentity/userAssignedIdentities/*/assign/action"),
        ("Contributor", "notActions", "Microsoft.Authorization/*/Write"),
        ("Key Vault Contributor", "notActions",
         "Microsoft.KeyVault/locations/deletedVaults/purge/action"),
        ("AcrPull", "actions", "Microsoft.ContainerRegistry/registries/pull/read"),
    ],
)
def test_spot_check_permissions(name: str, key: str, entry: str) -> None:
    assert entry in _merged(_role(name), key)


def test_owner_and_reader_are_the_wildcards() -> None:
    owner, reader = _role("Owner"), _role("Reader")
    assert _merged(owner, "actions") == ["*"] and _merged(owner, "notActions") == []
    assert _merged(reader, "actions") == ["*/read"]
    assert _merged(reader, "dataActions") == []


def test_control_plane_only_roles_grant_no_data_actions() -> None:
    for name in ("Owner", "Contributor", "Key Vault Contributor", "Storage Account Contributor",
                 "Website Contributor"):
        assert _merged(_role(name), "dataActions") == [], name


def test_data_access_administrator_condition_names_key_vault_roles() -> None:
    blocks = cast(list[dict[str, Any]], _role("Key Vault Data Access Administrator")["permissions"])
    condition = cast(str, blocks[0]["condition"])
    for role_name in ("Key Vault Secrets User", "Key Vault Administrator", "Key Vault Reader"):
        assert _role(role_name)["id"] in condition

"""The simulated Key Vault data plane, through azure-keyvault-secrets as the tool uses it:
challenge authentication, access policies and RBAC, versions, and Azure's error shapes (401
challenge and `AKV10000` as in the Azure SDK's public recordings of SecretClient)."""

from __future__ import annotations

import secrets
import ssl
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from migrator.sim.runtime import Runtime

if TYPE_CHECKING:
    from conftest import Sim

FIXTURES = Path(__file__).parents[1] / "fixtures"
ESTATE = """
tenant: {id: 6f1c3b0e-0000-4000-8000-0000000000a7, domain: vaults.onmicrosoft.com}
operator: migrator-operator
principals:
  - {name: migrator-operator, secrets: [{}], graph_app_roles: [Application.ReadWrite.All]}
  - {name: reader-sp, secrets: [{}]}
subscriptions:
  - name: prod
    resource_groups:
      - name: rg-a
        key_vaults:
          - name: kv-policy
            access_policies:
              - {principal: migrator-operator, secrets: [Get, Set]}
              - {principal: reader-sp, secrets: [get]}
            secrets: {app-secret: first-value}
          - name: kv-rbac
            rbac: true
            secrets: {app-secret: rbac-value}
          - name: kv-closed
            access_policies: [{principal: reader-sp, secrets: [get, list, set]}]
            secrets: {app-secret: closed-value}
role_assignments:
  - {principal: migrator-operator, role: Owner, scope: /subscriptions/prod}
  - {principal: migrator-operator, role: Key Vault Secrets Officer,
     scope: /subscriptions/prod/resourceGroups/rg-a/providers/Microsoft.KeyVault/vaults/kv-rbac}
"""


@pytest.fixture
def estate_path(tmp_path: Path) -> Path:
    path = tmp_path / "vaults.yaml"
    path.write_text(ESTATE)
    return path


def _uri(sim: Sim, vault: str) -> str:
    kv = sim.factory().keyvault(sim.subscription_id).vaults.get("rg-a", vault)
    return str(kv.properties.vault_uri)


def test_a_vault_has_its_own_origin_and_a_challenge(sim: Sim) -> None:
    uri = _uri(sim, "kv-policy")
    assert uri.startswith("https://127.0.0.1:") and uri.endswith("/") and uri != \
        sim.base_url + "/"
    with httpx.Client(verify=ssl.create_default_context(cafile=sim.ca_bundle)) as http:
        answer = http.put(f"{uri}secrets/x?api-version=7.5", json={"value": "v"})
    assert answer.status_code == 401
    assert answer.json() == {"error": {"code": "Unauthorized", "message":
                                       "AKV10000: Request is missing a Bearer or PoP token."}}
    assert answer.headers["www-authenticate"] == (
        f'Bearer authorization="{sim.base_url}/{sim.endpoints.tenant_id}", '
        'resource="https://vault.azure.net"')


def test_setting_a_secret_makes_a_version_the_runtime_resolves(sim: Sim) -> None:
    client = sim.factory().key_vault_secrets(_uri(sim, "kv-policy"))
    value = secrets.token_urlsafe(24)
    made = client.set_secret("app-secret", value, tags={"created-by": "test"})
    assert made.value == value and made.properties.version and made.properties.enabled
    assert made.id.startswith(_uri(sim, "kv-policy") + "secrets/app-secret/")
    assert client.get_secret("app-secret").value == value
    kv = sim.tenant.vaults["kv-policy"]
    first, second = kv.secret_versions("app-secret")
    assert second.version == made.properties.version and second.tags == {"created-by": "test"}
    assert client.get_secret("app-secret", first.version).value == "first-value"
    reader = sim.tenant.service_principals[sim.object_id("reader-sp")]
    runtime = Runtime(sim.tenant)
    with sim.tenant.lock:  # a reference that pins a version reads that version
        assert runtime.read_secret(reader, "kv-policy", "app-secret") == value
        assert runtime.read_secret(reader, "kv-policy", "app-secret", first.version) \
            == "first-value"


def test_rbac_vaults_take_data_roles(sim: Sim) -> None:
    client = sim.factory().key_vault_secrets(_uri(sim, "kv-rbac"))
    assert client.set_secret("app-secret", "new").properties.version


def test_no_set_permission_is_forbidden_as_key_vault_says(sim: Sim) -> None:
    client = sim.factory().key_vault_secrets(_uri(sim, "kv-closed"))
    with pytest.raises(HttpResponseError) as refused:
        client.set_secret("app-secret", "nope")
    assert refused.value.status_code == 403
    assert "does not have secrets set permission on key vault 'kv-closed" in str(refused.value)
    assert sim.tenant.vaults["kv-closed"].secrets["app-secret"] == "closed-value"
    reader = sim.factory("reader-sp").key_vault_secrets(_uri(sim, "kv-rbac"))
    with pytest.raises(HttpResponseError) as rbac:
        reader.get_secret("app-secret")
    assert rbac.value.status_code == 403 and "ForbiddenByRbac" in str(rbac.value)


def test_a_missing_secret_is_not_found(sim: Sim) -> None:
    client = sim.factory().key_vault_secrets(_uri(sim, "kv-policy"))
    with pytest.raises(ResourceNotFoundError, match="SecretNotFound"):
        client.get_secret("nope")

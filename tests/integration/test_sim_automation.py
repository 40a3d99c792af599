"""The simulator's Automation accounts: a runbook gets its account's system-assigned identity
from IDENTITY_ENDPOINT/IDENTITY_HEADER, as in Azure Automation (AZURE-FACTS.md), and that
identity's rights are what the estate grants the account."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import jwt
import pytest
from azure.identity import ManagedIdentityCredential

from migrator.cloud.factory import ClientFactory
from migrator.cloud.web import WebAdapter

if TYPE_CHECKING:
    from conftest import Sim

FIXTURES = Path(__file__).parents[1] / "fixtures"


@pytest.fixture
def estate_path() -> Path:
    return FIXTURES / "runbook_estate.yaml"


def test_a_runbook_signs_in_as_its_automation_account(
        sim: Sim, monkeypatch: pytest.MonkeyPatch) -> None:
    account = next(iter(sim.tenant.automation_accounts.values()))
    for name in ("AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_TENANT_ID", "MSI_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"{sim.base_url}/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", sim.tenant.identity_header_for(account.id))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", sim.ca_bundle)
    credential = sim.track(ManagedIdentityCredential())
    token = credential.get_token(sim.profile.arm_scope).token
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["oid"] == sim.object_id("aa-migrator") == account.identity.system_principal_id
    with ClientFactory(sim.profile, credential) as factory:  # Owner on prod: it can read sites
        sites = WebAdapter(factory).sites(sim.subscription_id)
    assert {s.name for s in sites} == {"solo-api", "shared-a", "shared-b"}
    graph_roles = sim.tenant.graph_roles_of(account.identity.system_principal_id)
    assert set(graph_roles) == {"Application.ReadWrite.All", "AppRoleAssignment.ReadWrite.All"}


def test_an_unknown_header_is_refused(sim: Sim) -> None:
    with sim.http() as http:
        answer = http.get("/msi/token", params={"api-version": "2019-08-01",
                                                 "resource": "https://management.azure.com"},
                          headers={"X-IDENTITY-HEADER": "not-a-header"})
    assert answer.status_code == 401

"""A secret no setting name pairs with is paired by the application id another setting holds
(issue 11 item 17), and says so; an ambiguous one is left unpaired and says why.

The estate is written per run with generated secrets: two principals whose secrets share
their first three characters (Graph's hint) make the ambiguous case.
"""

from __future__ import annotations

import secrets
import string
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from migrator.detect import Note
from migrator.inventory import Inventory
from migrator.plan.model import AppStatus, BlockedCode, Stage
from migrator.plan.planner import PlanOptions, build_plan
from migrator.scan import Scanner, ScanScope

if TYPE_CHECKING:
    from conftest import Sim

_ENTRA = string.ascii_letters + string.digits + "_~.-"


def entra_secret(prefix: str) -> str:
    rest = "".join(secrets.choice(_ENTRA) for _ in range(34))
    return f"{prefix}{secrets.randbelow(10)}Q~{rest}"


def estate(tmp_path: Path) -> Path:
    shared_hint = "".join(secrets.choice(string.ascii_letters) for _ in range(3))
    path = tmp_path / "pairing.yaml"
    path.write_text(f"""
tenant: {{id: {uuid.uuid4()}, domain: pairing.onmicrosoft.com}}
operator: migrator-operator
principals:
  - name: migrator-operator
    secrets: [{{}}]
    graph_app_roles: [Application.ReadWrite.All, AppRoleAssignment.ReadWrite.All]
  - name: relay-sp
    secrets: [{{}}]
  - name: twin-a
    secrets: [{{value: "{entra_secret(shared_hint)}"}}]
  - name: twin-b
    secrets: [{{value: "{entra_secret(shared_hint)}"}}]
  - name: lone-sp
    secrets: [{{}}]
subscriptions:
  - name: prod
    resource_groups:
      - name: rg-apps
        sites:
          - name: relay-api            # the code reads RELAY_TOKEN; RELAY_APP is its app id
            app_settings:
              RELAY_TOKEN: "@relay-sp.secrets[0]"
              RELAY_APP: "@relay-sp.app_id"
              APPINSIGHTS_INSTRUMENTATIONKEY: "{uuid.uuid4()}"
          - name: relay-worker         # the same credential, the usual way: migratable
            app_settings:
              AZURE_CLIENT_ID: "@relay-sp.app_id"
              AZURE_TENANT_ID: "@tenant.id"
              AZURE_CLIENT_SECRET: "@relay-sp.secrets[0]"
          - name: twin-api             # two app ids whose credentials share the hint
            app_settings:
              TOKEN: "@twin-a.secrets[0]"
              A_APP: "@twin-a.app_id"
              B_APP: "@twin-b.app_id"
          - name: lone-api             # no GUID anywhere: nothing to pair with
            app_settings:
              TOKEN: "@lone-sp.secrets[0]"
role_assignments:
  - {{principal: migrator-operator, role: Owner, scope: /subscriptions/prod}}
""", encoding="utf-8")
    return path


def finding(inventory: Inventory, site: str, setting: str):  # type: ignore[no-untyped-def]
    app = next(a for a in inventory.apps if a.site.display == site)
    return next(f for f in app.findings if f.secret.name == setting)


def test_a_value_only_secret_is_paired_by_the_app_id_beside_it(
        start_sim: Callable[[Path], Sim], tmp_path: Path) -> None:
    sim = start_sim(estate(tmp_path))
    inventory = Scanner(sim.factory()).run(ScanScope())
    assert inventory.complete, inventory.gaps

    relay = finding(inventory, "relay-api", "RELAY_TOKEN")
    assert relay.client_id == sim.client_id("relay-sp").lower()
    assert relay.client_id_setting is not None and relay.client_id_setting.name == "RELAY_APP"
    assert Note.PAIRED_BY_VALUE.value in relay.note.split("; ")
    principal = next(p for p in inventory.principals
                     if p.principal and p.principal.display_name == "relay-sp")
    assert {(u.app, u.match.status) for u in principal.used_by} == {
        ("relay-api", "matched"), ("relay-worker", "matched")}

    twin = finding(inventory, "twin-api", "TOKEN")
    assert twin.client_id is None
    assert Note.PAIRED_AMBIGUOUS.value in twin.note.split("; ")
    lone = finding(inventory, "lone-api", "TOKEN")
    assert lone.client_id is None and "paired" not in lone.note

    # The payoff: relay-api reads the secret in code (blocked), so relay-worker's revoke of the
    # shared credential is held instead of cutting relay-api off.
    plan = build_plan(inventory, PlanOptions(name="t", tool_version="test"))
    apps = {a.name: a for a in plan.apps}
    assert apps["relay-api"].status is AppStatus.BLOCKED
    assert [b.code for b in apps["relay-api"].blocked] == [BlockedCode.CODE_NEEDS_SECRET]
    revoke = next(s for s in apps["relay-worker"].stages if s.stage is Stage.REVOKE)
    assert any("relay-api still uses credential" in h for h in revoke.held), revoke.held

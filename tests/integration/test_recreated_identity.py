"""A user-assigned identity deleted, or deleted and re-created, between the stages of a
migration (an apply run stage by stage over days; someone tidies up, or a pipeline redeploys).

In Azure a deleted identity's principal goes, its ARM role assignments stay behind orphaned,
and the sites it was assigned to keep their entry for it with the old ids; one re-created under
the same name is a new principal with new ids, which those sites do not hold until it is
assigned to them again. (learn.microsoft.com/samples/azure/azure-quickstart-templates/
key-vault-managed-identity-role-assignment, "Deletion behavior".) The simulator does all of it.

The product must not grant rights to the new principal for apps that cannot use it, nor swap
them to it: it refuses the later stages with what happened and how to recover (roll the app
back, which keeps the re-created identity since this plan did not make it, and apply again).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.mgmt.msi.models import Identity
from conftest import Sim

from migrator.cloud.changes import CloudChanges
from migrator.execute.engine import ApplyOptions, Engine
from migrator.execute.journal import SqliteJournal
from migrator.execute.stash import FileStash
from migrator.plan import PlanOptions, build_plan
from migrator.plan.model import Stage
from migrator.scan import Scanner

pytestmark = pytest.mark.integration

ESTATE = Path(__file__).parents[1] / "fixtures" / "execute_estate.yaml"
APPS = ("shared-a", "shared-b")
UAI = "id-shared-sp-migrated"
IDENTITY_ONLY = ApplyOptions(apps=APPS, stages=(Stage.IDENTITY,), soak=timedelta(0))
EVERYTHING = ApplyOptions(apps=APPS, soak=timedelta(0), health_timeout=30)


@pytest.fixture
def estate_path() -> Path:
    return ESTATE


class Staged:
    def __init__(self, sim: Sim, tmp: Path) -> None:
        self.sim = sim
        self.factory = sim.factory()
        self.plan = build_plan(Scanner(self.factory, workers=2).run(),
                               PlanOptions(name="recreated", tool_version="test"))
        self.engine = Engine(self.plan, SqliteJournal(tmp / "j.sqlite"),
                             FileStash(tmp / "s.stash", tmp / "keys" / "stash.key"),
                             CloudChanges(self.factory))
        self.sub = sim.subscription_id

    @property
    def msi(self) -> Any:
        return self.factory.msi(self.sub).user_assigned_identities

    def uai(self) -> Any:
        return self.msi.get("rg-orders", UAI)

    def site_identity(self, app: str) -> dict[str, Any]:
        with self.sim.http() as http:
            state = http.get("/_sim/state").json()
        return next(s["identity"] for s in state["sites"] if s["name"] == app)

    def held(self, app: str) -> dict[str, str]:
        """The user-assigned identities as GET site answers them: resource id -> principal."""
        rg = "rg-orders" if app == "shared-a" else "rg-shared"
        site = self.factory.web(self.sub).web_apps.get(rg, app)
        held = site.identity.user_assigned_identities if site.identity is not None else None
        return {k.lower(): v.principal_id for k, v in (held or {}).items()}

    def healthy(self, app: str) -> bool:
        with self.sim.http() as http:
            return http.get(f"/_sites/{app}/healthz").status_code == 200


@pytest.fixture
def staged(sim: Sim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Staged:
    monkeypatch.setenv("MIGRATOR_STASH_KEY_FILE", str(tmp_path / "keys" / "stash.key"))
    made = Staged(sim, tmp_path)
    assert all(o.outcome == "done" for o in made.engine.apply(IDENTITY_ONLY))
    return made


def test_a_re_created_identity_is_refused_and_recovered_by_rollback_and_apply(
        staged: Staged, sim: Sim) -> None:
    first = staged.uai()
    location = first.location
    staged.msi.delete("rg-orders", UAI)
    # Azure: the sites keep their entry, with the deleted identity's ids.
    assert set(staged.held("shared-a").values()) == {first.principal_id}
    second = staged.msi.create_or_update("rg-orders", UAI, Identity(location=location))
    assert second.principal_id != first.principal_id
    assert second.client_id != first.client_id
    assert set(staged.held("shared-a").values()) == {first.principal_id}

    outcomes = {o.app: o for o in staged.engine.apply(EVERYTHING)}

    for app in APPS:
        assert outcomes[app].outcome == "refused", outcomes[app]
        message = outcomes[app].message
        assert "re-created since it was assigned" in message, message
        assert f"migrator rollback <plan> --app {app}" in message, message
        assert outcomes[app].stages_done == ("identity",)
    granted = [a for a in sim.tenant.role_assignments.values()
               if a.principal_id == second.principal_id]
    assert granted == [], "rights went to a principal the apps cannot use"

    for app in APPS:
        assert staged.engine.rollback(app).outcome == "rolled-back", app
    assert staged.uai().principal_id == second.principal_id  # not this plan's: kept
    assert staged.held("shared-a") == {} and staged.held("shared-b") == {}

    again = {o.app: o for o in staged.engine.apply(EVERYTHING)}

    assert {a: o.outcome for a, o in again.items()} == dict.fromkeys(APPS, "done"), again
    for app in APPS:
        assert set(staged.held(app).values()) == {second.principal_id}, app
        assert staged.healthy(app), app


def test_a_deleted_identity_is_refused(staged: Staged) -> None:
    staged.msi.delete("rg-orders", UAI)

    outcomes = staged.engine.apply(EVERYTHING)

    assert [o.outcome for o in outcomes] == ["refused", "refused"], outcomes
    assert all("no longer exists" in o.message for o in outcomes), outcomes


def test_the_app_cannot_sign_in_with_an_identity_re_created_under_it(staged: Staged) -> None:
    """The simulator's side: after the swap, deleting and re-creating the identity breaks the
    app (its site still holds the old ids), as it would in Azure."""
    assert all(o.outcome == "done" for o in staged.engine.apply(EVERYTHING))
    assert staged.healthy("shared-a")
    location = staged.uai().location

    staged.msi.delete("rg-orders", UAI)
    staged.msi.create_or_update("rg-orders", UAI, Identity(location=location))

    assert not staged.healthy("shared-a")
    assert not staged.healthy("shared-b")

"""Rolling back the removal of a credential whose text an app reads through a Key Vault
reference (issue 11, item 2). Before this, rollback restored the reference, printed
"rolled-back" and exited 0 while the app read a deleted secret: the replacement sat only in the
stash. Now the plan lists the vault write, the operator's right to make it is checked at plan
time (the revoke is held when it is missing), and the rollback writes the replacement as a new
version of the vault secret (repointing a reference that pins a version) before it restores
the settings, so the app is healthy on it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from test_rollback_safety import Operator

from migrator.sim.runtime import parse_kv_reference_version

if TYPE_CHECKING:
    from conftest import Sim

FIXTURES = Path(__file__).parents[1] / "fixtures"


@pytest.fixture
def estate_path() -> Path:
    return FIXTURES / "vault_rollback_estate.yaml"


@pytest.fixture
def op(sim: Sim, tmp_path: Path) -> Iterator[Operator]:
    # pin-app's reference pins the secret's first version (its id is made by the simulator)
    with sim.tenant.lock:
        version = sim.tenant.vaults["kv-policy"].secret_versions("pin-secret")[0].version
        sim.tenant.sites["pin-app"].app_settings["AZURE_CLIENT_SECRET"] = (
            "@Microsoft.KeyVault(SecretUri=https://kv-policy.vault.azure.net/secrets/"
            f"pin-secret/{version})")
    operator = Operator(sim, tmp_path)
    yield operator
    assert operator.leaks() == []


def _app(plan: dict[str, Any], name: str) -> dict[str, Any]:
    return next(a for a in plan["apps"] if a["name"] == name)


def _revoke(plan: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in _app(plan, name)["stages"] if s["stage"] == "revoke")


def _setting(sim: Sim, site: str) -> str:
    with sim.tenant.lock:
        return sim.tenant.sites[site].app_settings["AZURE_CLIENT_SECRET"]


def _passwords(sim: Sim, principal: str) -> list[tuple[str, str]]:
    with sim.tenant.lock:
        app = sim.tenant.app_by_app_id(sim.client_id(principal))
        assert app is not None
        return [(p.key_id, p.secret) for p in app.passwords]


def test_the_plan_lists_the_vault_write_and_holds_what_it_could_not_undo(op: Operator) -> None:
    plan = json.loads(op.plan.read_text())
    for name, vault, secret in (("pol-app", "kv-policy", "pol-secret"),
                                ("rbac-app", "kv-rbac", "rbac-secret"),
                                ("pin-app", "kv-policy", "pin-secret")):
        revoke = _revoke(plan, name)
        assert not revoke.get("held"), (name, revoke.get("held"))
        undo = revoke["steps"][0]["undo"]["description"]
        assert f"new version of secret {secret} in Key Vault {vault}" in undo, undo
        held_by = _app(plan, name)["credentials"][0]["vault_secrets"]
        assert [(v["vault"], v["secret"], v["referenced_by"]) for v in held_by] == \
            [(vault, secret, [name])]
        assert held_by[0]["vault_uri"].startswith("https://127.0.0.1:")
    assert "pins version" in _revoke(plan, "pin-app")["steps"][0]["undo"]["description"]
    held = " ".join(_revoke(plan, "closed-app")["held"])
    assert "closed-secret in Key Vault kv-closed" in held and "'set' secret permission" in held


@pytest.mark.parametrize(("name", "principal", "vault", "secret"), [
    ("pol-app", "pol-sp", "kv-policy", "pol-secret"),
    ("rbac-app", "rbac-sp", "kv-rbac", "rbac-secret"),
    ("pin-app", "pin-sp", "kv-policy", "pin-secret"),
])
def test_rollback_writes_the_replacement_into_the_vault(
        op: Operator, sim: Sim, name: str, principal: str, vault: str, secret: str) -> None:
    before = _setting(sim, name)
    [(old_key, _)] = _passwords(sim, principal)
    done = op("apply", str(op.plan), "--app", name, "--soak", "0", "--yes")
    assert done.exit_code == 0, done.output
    assert f"done {name} (stages done: identity, grant, swap, revoke)" in done.output
    assert _passwords(sim, principal) == [] and op.healthy(name)

    back = op("rollback", str(op.plan), "--app", name, "--yes")
    assert back.exit_code == 0 and f"rolled-back {name}" in back.output, back.output
    assert op.healthy(name)  # on the replacement, read through the restored reference
    [(new_key, new_text)] = _passwords(sim, principal)
    assert new_key != old_key
    with sim.tenant.lock:
        kv = sim.tenant.vaults[vault]
        versions = kv.secret_versions(secret)
        assert kv.secret_value(secret) == new_text
    assert len(versions) == 2 and versions[-1].tags["msi-migrator"] == \
        f"replacement for {old_key}"
    restored = _setting(sim, name)
    found = parse_kv_reference_version(restored)
    assert found is not None and found[:2] == (vault, secret)
    if name == "pin-app":  # repointed at the version that holds the replacement
        assert found[2] == versions[-1].version and restored != before
    else:
        assert restored == before
    assert f"in Key Vault {vault}" in back.output  # the note says what was written

    # A second rollback finds nothing to do and writes no further version.
    again = op("rollback", str(op.plan), "--app", name, "--yes")
    assert again.exit_code == 0, again.output
    with sim.tenant.lock:
        assert len(sim.tenant.vaults[vault].secret_versions(secret)) == 2


def test_a_vault_the_operator_cannot_write_keeps_the_credential(op: Operator, sim: Sim) -> None:
    done = op("apply", str(op.plan), "--app", "closed-app", "--soak", "0", "--yes")
    assert done.exit_code == 0, done.output
    assert "revoke" in done.output and "held" in done.output, done.output
    assert len(_passwords(sim, "closed-sp")) == 1  # not removed: a rollback could not undo it
    assert op.healthy("closed-app")
    back = op("rollback", str(op.plan), "--app", "closed-app", "--yes")
    assert back.exit_code == 0 and op.healthy("closed-app"), back.output

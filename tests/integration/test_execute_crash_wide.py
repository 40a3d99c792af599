"""The executor killed at every step boundary of the other kinds of step (issue 11 item 24).

test_execute_crash.py kills `apply` among role assignments and app settings only. Here the
apps of tests/fixtures/execute_estate.yaml whose steps are of every other kind: orders-api and
its staging slot (one user-assigned identity; a Key Vault access policy, a Graph app role and
a role assignment; a slot setting) and sql-api (a system-assigned identity, a SQL database user
an operator creates and confirms, and a connection string rewritten).

sql-api's database user is an operator's step: before the killed run, `apply --app sql-api
--stage identity` makes its identity and the test runs the T-SQL the plan gives, as an operator
would; the killed run then passes `--confirm-sql`.

For each kill point k of the killed `apply`:
- resume: `apply` again, itself killed at a second point, then once more to the end; the end
  state must be the *same* as an uninterrupted run's (compared by names: no stray identity, role
  assignment, access policy, app role or setting; the same credentials gone);
- rollback: `rollback` of each app, the first of them killed at a second point and run again;
  then every setting, identity and right is as before the run (a removed credential replaced
  by a minted one, which the apps now hold), and every app is healthy.
No secret the tenant held, before or after, is in the journal, its WAL, the stash or any output.

RECORDS_WIDE, the journal records of an uninterrupted killed-phase run, is asserted by the
k = RECORDS_WIDE + 1 cases. All cases run in forked children (see test_execute_crash.py).
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
from conftest import Sim, running_sim
from test_execute_crash import Finished, Workspace

pytestmark = [pytest.mark.slow, pytest.mark.integration]

FIXTURES = Path(__file__).parents[1] / "fixtures"
ESTATE = FIXTURES / "execute_estate.yaml"
WIDE_APPS = ("orders-api", "orders-api/staging", "sql-api")
RECORDS_WIDE = 47  # journal records of an uninterrupted killed-phase run (measured, asserted)
_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)


@pytest.fixture
def estate_path() -> Path:
    return ESTATE


class WideWorkspace(Workspace):
    """The kill-point workspace for WIDE_APPS; sql-api's identity made and its database user
    created (as an operator would) before the run that is killed."""

    def __init__(self, sim: Sim, tmp_path: Path) -> None:
        super().__init__(sim, tmp_path, "fork")
        self.prepared = 0

    def prepare(self) -> None:
        """Create sql-api's identity and database user: the T-SQL `apply` prints for it, run
        as an operator would (the simulator's T-SQL endpoint)."""
        waiting = self.migrator("apply", str(self.plan_path), "--app", "sql-api", "--stage",
                                "grant", "--yes")
        assert waiting.returncode == 0, waiting.output
        script = waiting.stdout[waiting.stdout.index("CREATE USER"):]
        name = script.split("[", 1)[1].split("]", 1)[0]
        with self.sim.http() as http:
            answer = http.post("/_sim/sql", json={
                "server": "sql-woodgrove", "database": "sales",
                "script": f"CREATE USER [{name}] FROM EXTERNAL PROVIDER; "
                          f"ALTER ROLE db_datareader ADD MEMBER [{name}];"})
        assert answer.status_code == 200, answer.text
        self.prepared = len(self.journal_rows())

    def apply(self, kill_at: int | None = None) -> Finished:
        apps = [arg for app in WIDE_APPS for arg in ("--app", app)]
        return self.migrator("apply", str(self.plan_path), *apps, "--soak", "0", "--yes",
                             "--confirm-sql", "--health-timeout", "20", kill_at=kill_at)

    def rollback_killed(self, app: str, kill_at: int | None) -> Finished:
        return self.migrator("rollback", str(self.plan_path), "--app", app, "--yes",
                             kill_at=kill_at)

    def healthy(self, app: str) -> bool:
        site, _, slot = app.partition("/")
        path = f"/_sites/{site}" + (f"/slots/{slot}" if slot else "") + "/healthz"
        with self.sim.http() as http:
            return http.get(path).status_code == 200

    def secrets_now(self) -> set[str]:
        return set(self.current_secrets())


def shape(state: dict[str, Any], secrets: set[str]) -> dict[str, Any]:
    """A simulator state by names, not ids: two simulators of one estate compare equal when
    the same identities, rights, settings and credentials exist. Secret values become
    `<secret>`; ids become the name of what they identify."""
    names: dict[str, str] = {}
    for sp in state["servicePrincipals"]:
        names[sp["id"].lower()] = f"sp:{sp['displayName']}"
        names[sp["appId"].lower()] = f"app:{sp['displayName']}"
    for uai in state["userAssignedIdentities"]:
        label = f"uai:{uai['id'].rsplit('/', 1)[-1]}"
        names[uai["principalId"].lower()] = label
        names[uai["clientId"].lower()] = label + ":client"
    names[state["tenant"]["id"].lower()] = "tenant"

    def text(value: str) -> str:
        if value in secrets:
            return "<secret>"
        for secret in secrets:
            value = value.replace(secret, "<secret>")
        return _GUID.sub(lambda m: names.get(m.group(0).lower(), "<guid>"), value)

    return {
        "applications": sorted(
            (a["displayName"], len(a["passwordCredentials"])) for a in state["applications"]),
        "servicePrincipals": sorted(
            (sp["displayName"], sp["servicePrincipalType"], sp["accountEnabled"],
             tuple(sorted(map(str, sp["graphAppRoles"])))) for sp in state["servicePrincipals"]),
        "roleAssignments": sorted(
            (text(r["principalId"]), r["roleDefinitionId"].rsplit("/", 1)[-1],
             text(r["scope"]).lower()) for r in state["roleAssignments"]),
        "keyVaults": sorted(
            (v["id"].lower(), tuple(sorted((text(p["objectId"]), tuple(sorted(p["secrets"])))
                                           for p in v["accessPolicies"])))
            for v in state["keyVaults"]),
        "sites": sorted(
            (s["name"], s["identity"]["type"], text(str(s["identity"]["principalId"])),
             tuple(sorted(i.rsplit("/", 1)[-1] for i in s["identity"]["userAssignedIdentities"])),
             tuple(sorted((k, text(v)) for k, v in s["appSettings"].items())),
             tuple(sorted((k, c["type"], text(c["value"]))
                          for k, c in s["connectionStrings"].items())),
             tuple(sorted(s["slotSettingNames"]))) for s in state["sites"]),
        "userAssignedIdentities": sorted(u["id"].rsplit("/", 1)[-1].lower()
                                         for u in state["userAssignedIdentities"]),
        "sqlServers": sorted(
            (s["name"], tuple(sorted((d, tuple(sorted((text(u), tuple(sorted(r)))
                                                      for u, r in users.items())))
                                     for d, users in s["databases"].items())))
            for s in state["sqlServers"]),
    }


_REFERENCE: dict[str, Any] = {}


def reference() -> tuple[dict[str, Any], int]:
    """The end shape of an uninterrupted run and its record count, on a simulator of its own
    (once per test process)."""
    if not _REFERENCE:
        with tempfile.TemporaryDirectory() as tmp, running_sim(ESTATE, Path(tmp) / "sim") as sim:
            ws = WideWorkspace(sim, Path(tmp))
            ws.prepare()
            before = len(ws.journal_rows())
            done = ws.apply()
            assert done.returncode == 0, done.output
            _REFERENCE["shape"] = shape(ws.state(), ws.secrets)
            _REFERENCE["records"] = len(ws.journal_rows()) - before
            assert _REFERENCE["records"] == RECORDS_WIDE, (
                f"an uninterrupted run wrote {_REFERENCE['records']} journal records, not "
                f"{RECORDS_WIDE}: the plan changed shape; set RECORDS_WIDE to match")
    return _REFERENCE["shape"], _REFERENCE["records"]


def _second(k: int, records: int) -> int:
    """Where the second command of a case is killed: spread over its records, and varied
    with k so the cases together kill it at many points (one past the end: not killed)."""
    return 1 + (k * 7) % (records + 1)


KILL_POINTS_WIDE = range(1, RECORDS_WIDE + 2)  # the last: nothing killed


def _killed(ws: WideWorkspace, kill_at: int, records: int) -> None:
    killed = ws.apply(kill_at=kill_at)
    written = len(ws.journal_rows()) - ws.prepared
    if kill_at <= records:
        assert killed.returncode == -9, killed.output
        assert written == kill_at - 1, written
    else:
        assert killed.returncode == 0, killed.output
        assert written == records


@pytest.fixture
def wide(sim: Sim, tmp_path: Path) -> tuple[WideWorkspace, dict[str, Any], int]:
    expected, records = reference()
    return WideWorkspace(sim, tmp_path), expected, records


@pytest.mark.parametrize("kill_at", KILL_POINTS_WIDE, ids=lambda k: f"k{k:02d}")
def test_apply_killed_twice_ends_as_an_uninterrupted_run(
        wide: tuple[WideWorkspace, dict[str, Any], int], kill_at: int) -> None:
    ws, expected, records = wide
    ws.prepare()
    _killed(ws, kill_at, records)
    again = ws.apply(kill_at=_second(kill_at, records))
    assert again.returncode in (-9, 0), again.output  # killed again, or finished
    resumed = ws.apply()
    assert resumed.returncode == 0, resumed.output
    assert shape(ws.state(), ws.secrets | ws.secrets_now()) == expected
    for app in WIDE_APPS:
        assert ws.healthy(app), app
    ws.assert_no_secret_leaked()


@pytest.mark.parametrize("kill_at", KILL_POINTS_WIDE, ids=lambda k: f"k{k:02d}")
def test_rollback_killed_then_again_restores_the_former_state(
        wide: tuple[WideWorkspace, dict[str, Any], int], kill_at: int) -> None:
    ws, _, records = wide
    before = ws.state()
    ws.prepare()
    old = ws.secrets_now()
    _killed(ws, kill_at, records)
    for i, app in enumerate(reversed(WIDE_APPS)):
        if i == 0:
            first = ws.rollback_killed(app, _second(kill_at, 8))
            assert first.returncode in (-9, 0), first.output  # killed, or finished
        undone = ws.rollback_killed(app, None)
        assert undone.returncode == 0, undone.output
        assert "rolled-back" in undone.stdout, undone.output
    after = ws.state()
    minted = ws.secrets_now() - old
    # Everything is as before the run, sql-api's identity included (made before the killed run
    # and undone with the rest), except what cannot be undone: a credential the run removed is
    # a newly minted one, held by every app that held the old (the shape calls both
    # `<secret>` and counts credentials), and sql-api's database user, whose removal rollback
    # leaves to the operator (it prints the T-SQL).
    want, got = shape(before, old), shape(after, old | minted)
    assert {k: v for k, v in got.items() if k != "sqlServers"} == {
        k: v for k, v in want.items() if k != "sqlServers"}
    assert len(minted) <= 2  # at most orders-sp's and sql-sp's credentials
    for app in WIDE_APPS:
        assert ws.healthy(app), app
    ws.assert_no_secret_leaked()

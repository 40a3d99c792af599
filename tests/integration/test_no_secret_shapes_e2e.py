"""No secret, whatever its shape, reaches any output of the CLI or any file it writes (issue 11,
item 23).

The other end-to-end leak tests run on estates whose secrets the simulator generates in Entra's
format, the one format the journal's guard recognises, and their scan and plan checks never
look for the storage keys, SAS keys, JWTs or Stripe keys that sit in the settings. Here the
estate (tests/fixtures/secret_shapes_estate.yaml.tmpl) is filled at each run with fresh random
values of other shapes: principal secrets in base64, URL-safe and hex, an Azure Storage account
key and a Service Bus SAS key in their connection strings, SQL passwords (a SQL login's and a
service principal's in its connection string), a JWT, a Stripe key, a random base64 key.

The operator's whole session goes through the CLI: scan (table and JSON), plan, report
(terminal, Markdown, HTML, JSON), apply with --soak 0 --yes (and the SQL step confirmed), status,
then rollbacks of three apps (one on its own principal, one of a shared principal, one whose
secret is read through a Key Vault reference: each mints a new secret). Then every generated
value, and every secret the tenant held at the start (the revoked ones above all) or holds at
the end (the minted ones), is looked for in every command's output, the logs, every file the
commands wrote (the encrypted stash excepted) and every row of the journal's database.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import os
import secrets
import sqlite3
import string
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest
from typer.testing import CliRunner, Result

from migrator.cli import app
from migrator.detect.values import is_entra_client_secret

if TYPE_CHECKING:
    from conftest import Sim

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).parents[1] / "fixtures"
TEMPLATE = FIXTURES / "secret_shapes_estate.yaml.tmpl"
MIGRATED = ("solo-api", "shared-a", "shared-b", "vaulted-api")
ROLLED_BACK = ("solo-api", "shared-a", "vaulted-api")


def _b64(size: int) -> str:
    return base64.b64encode(secrets.token_bytes(size)).decode()


def _jwt() -> str:
    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    claims = {"sub": secrets.token_hex(8), "aud": "api://shapes", "nonce": secrets.token_hex(16)}
    return ".".join((part(b'{"alg":"HS256","typ":"JWT"}'), part(json.dumps(claims).encode()),
                     part(secrets.token_bytes(32))))


def generated_secrets() -> dict[str, str]:
    """Fresh values for the template's secret placeholders, none in Entra's format."""
    alnum = string.ascii_letters + string.digits
    return {
        "SOLO_SP_SECRET": _b64(48),
        "SHARED_SP_SECRET": secrets.token_urlsafe(32),
        "VAULTED_SP_SECRET": secrets.token_hex(24),
        "SQL_SP_SECRET": secrets.token_urlsafe(24),
        "VAULT_DB_PASSWORD": secrets.token_urlsafe(20),
        "RANDOM_BASE64": _b64(48),
        "JWT": _jwt(),
        "STRIPE_KEY": "sk_live_" + "".join(secrets.choice(alnum) for _ in range(32)),
        "STORAGE_ACCOUNT_KEY": _b64(64),
        "SERVICE_BUS_SAS_KEY": _b64(32),
        "SQL_LOGIN_PASSWORD": secrets.token_urlsafe(18),
    }


def connection_strings(values: dict[str, str]) -> dict[str, str]:
    """The template's connection-string placeholders, around the generated keys."""
    return {
        "STORAGE_CONNECTION_STRING": (
            "DefaultEndpointsProtocol=https;AccountName=shapesdata;"
            f"AccountKey={values['STORAGE_ACCOUNT_KEY']};EndpointSuffix=core.windows.net"),
        "SERVICE_BUS_CONNECTION_STRING": (
            "Endpoint=sb://shapes-bus.servicebus.windows.net/;SharedAccessKeyName="
            f"RootManageSharedAccessKey;SharedAccessKey={values['SERVICE_BUS_SAS_KEY']}"),
        "SQL_LOGIN_CONNECTION_STRING": (
            "Server=tcp:sql-reporting.database.windows.net,1433;Database=reports;"
            f"User ID=reporting;Password={values['SQL_LOGIN_PASSWORD']};Encrypt=True"),
    }


def render_estate(values: dict[str, str]) -> str:
    return string.Template(TEMPLATE.read_text(encoding="utf-8")).substitute(values)


def passwords(sim: Sim) -> set[str]:
    """The password credentials of the tenant's applications now."""
    with sim.tenant.lock:
        return {p.secret for a in sim.tenant.applications.values() for p in a.passwords}


def tenant_secrets(sim: Sim) -> set[str]:
    """Every secret the simulated tenant holds now: each application's passwords and every
    version of every Key Vault secret."""
    found = passwords(sim)
    with sim.tenant.lock:
        for vault in sim.tenant.vaults.values():
            for name in list(vault.secrets):
                found |= {v.value for v in vault.secret_versions(name)}
    return found


def forms(value: str, *, parts: bool) -> set[str]:
    """How a value would show: as it is, escaped for JSON, HTML or a URL; with `parts`, also
    without its first three characters (the hint Entra shows, which a plan may show) and any
    16 characters of it."""
    found = {value, json.dumps(value)[1:-1], html.escape(value), quote(value, safe="")}
    if parts:
        found |= {value[3:], *(value[i:i + 16] for i in range(len(value) - 15))}
    return found


class Session:
    """The operator's `migrator` commands against one simulator, and all they left behind."""

    def __init__(self, sim: Sim, work: Path, values: dict[str, str]) -> None:
        self.sim = sim
        self.work = work
        self.plans = work / "plans"
        self.values = values
        self.env = {**sim.endpoints.environment(), "COLUMNS": "200",
                    "MIGRATOR_STASH_KEY_FILE": str(work / "keys" / "stash.key")}
        self.outputs: list[tuple[str, str]] = []
        # Before anything runs: a revoke deletes the secret a run handles.
        self.initial = tenant_secrets(sim)

    def __call__(self, *args: str, code: int | tuple[int, ...] = 0) -> Result:
        result = CliRunner().invoke(app, list(args), env=self.env)
        self.outputs.append((args[0], result.output))
        wanted = code if isinstance(code, tuple) else (code,)
        assert result.exit_code in wanted, f"migrator {' '.join(args)}:\n{result.output}"
        return result

    def healthy(self, name: str) -> bool:
        with self.sim.http() as http:
            return http.get(f"/_sites/{name}/healthz").status_code == 200

    def journal_rows(self) -> str:
        """Every row of every table of the journal's database, as text."""
        rows: list[Any] = []
        with sqlite3.connect(self.plans / "p.journal.sqlite") as db:
            tables = [t for (t,) in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")]
            for table in tables:
                rows += db.execute(f'SELECT * FROM "{table}"').fetchall()
        assert rows, "the journal recorded nothing"
        return "\n".join(map(repr, rows))

    def written(self, *directories: Path) -> dict[str, str]:
        """Every file the commands wrote, but the encrypted stash."""
        return {str(p): p.read_text(encoding="utf-8", errors="replace")
                for d in directories for p in sorted(d.rglob("*"))
                if p.is_file() and not p.name.endswith(".stash")}


@pytest.fixture
def values() -> dict[str, str]:
    made = generated_secrets()
    return made | connection_strings(made)


@pytest.fixture
def session(values: dict[str, str], tmp_path: Path, start_sim: Callable[[Path], Sim],
            caplog: pytest.LogCaptureFixture) -> Session:
    caplog.set_level(logging.DEBUG)
    estate = tmp_path / "estate" / "estate.yaml"  # holds the values: never searched
    estate.parent.mkdir()
    estate.write_text(render_estate(values), encoding="utf-8")
    return Session(start_sim(estate), tmp_path / "work", values)


def test_no_secret_of_any_shape_reaches_an_output_or_a_file(
        session: Session, values: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    run, sim, plan = session, session.sim, str(session.plans / "p.json")
    # The values are the tenant's: the principals sign in with them, the apps hold them.
    # (Comparisons are made to booleans first: a failing assert must not print a value.)
    principal_secrets = [values[k] for k in ("SOLO_SP_SECRET", "SHARED_SP_SECRET",
                                             "VAULTED_SP_SECRET", "SQL_SP_SECRET")]
    held = all(v in passwords(sim) for v in principal_secrets)
    assert held, "the principals do not hold the generated secrets"
    # none is in Entra's format, so the journal's guard cannot know them for secrets
    assert not any(is_entra_client_secret(v) for v in values.values())
    with sim.tenant.lock:
        solo = sim.tenant.webapp("solo-api")
        assert solo is not None
        given = (solo.app_settings["AZURE_CLIENT_SECRET"] == values["SOLO_SP_SECRET"]
                 and solo.app_settings["AzureWebJobsStorage"]
                 == values["STORAGE_CONNECTION_STRING"])
    assert given, "solo-api does not hold the generated values"
    assert all(run.healthy(name) for name in (*MIGRATED, "sql-api"))

    run("scan", "--output", "table")
    scanned = json.loads(run("scan", "--output", "json").output)
    rules = {(a["site"]["name"], f["secret"]["name"], f["rule"])
             for a in scanned["apps"] for f in a["findings"]}
    # the detector read the keys' values (shared keys) and the principals' secrets
    assert {("solo-api", "AzureWebJobsStorage", "storage-account-key"),
            ("solo-api", "ServiceBusConnection", "servicebus-sas"),
            ("solo-api", "AZURE_CLIENT_SECRET", "azure-identity-env"),
            ("sql-api", "Sales", "sql-service-principal")} <= rules, rules

    run("plan", "--name", "p", "--dir", str(run.plans))
    document = json.loads((run.plans / "p.json").read_text(encoding="utf-8"))
    assert {a["name"]: a["status"] for a in document["apps"]} == dict.fromkeys(
        (*MIGRATED, "sql-api"), "migratable")
    run("report", plan)
    run("report", plan, "--format", "json")
    for fmt, suffix in (("markdown", "md"), ("html", "html"), ("json", "json")):
        run("report", plan, "--format", fmt, "--output", str(run.work / f"report.{suffix}"))

    applied = run("apply", plan, "--soak", "0", "--yes", "--health-timeout", "20")
    for name in MIGRATED:
        assert f"done {name} (stages done: identity, grant, swap, revoke)" in applied.output
    assert "waiting sql-api" in applied.output
    script = next(line for line in applied.output.splitlines() if "CREATE USER" in line)
    user = script.split("[", 1)[1].split("]", 1)[0]
    with sim.http() as http:  # the operator runs the plan's T-SQL
        ran = http.post("/_sim/sql", json={
            "server": "sql-shapes", "database": "sales",
            "script": f"CREATE USER [{user}] FROM EXTERNAL PROVIDER; "
                      f"ALTER ROLE db_datareader ADD MEMBER [{user}];"})
        assert ran.status_code == 200, ran.text
    sql = run("apply", plan, "--app", "sql-api", "--confirm-sql", "--soak", "0", "--yes",
              "--health-timeout", "20")
    assert "done sql-api (stages done: identity, grant, swap, revoke)" in sql.output
    run("status", plan)
    gone = not any(v in passwords(sim) for v in principal_secrets)
    assert gone, "a revoked secret is still a credential"  # and still looked for below

    for name in ROLLED_BACK:
        undone = run("rollback", plan, "--app", name, "--yes", "--health-timeout", "20")
        assert f"rolled-back {name}" in undone.output
    run("status", plan)
    assert all(run.healthy(name) for name in (*MIGRATED, "sql-api"))
    minted = passwords(sim) - run.initial
    assert len(minted) == 3  # solo-sp's, shared-sp's, vaulted-sp's
    with sim.tenant.lock:
        in_vault = sim.tenant.vaults["kv-shapes"].secrets["vaulted-secret"] in minted
    assert in_vault, "the rollback did not write vaulted-sp's new secret into the vault"

    texts = {f"output of migrator {what} (#{i + 1})": out
             for i, (what, out) in enumerate(run.outputs)}
    texts["the logs"] = "\n".join([caplog.text, *(r.getMessage() for r in caplog.records)])
    texts["the journal's rows"] = run.journal_rows()
    texts |= run.written(run.work, Path(os.environ["MIGRATOR_STATE_DIR"]))
    assert {"p.json", "p.md", "p.html", "p.journal.sqlite", "report.md", "report.html",
            "report.json"} <= {Path(name).name for name in texts}
    for name, text in list(texts.items()):
        texts[f"{name} (without white space)"] = "".join(text.split())  # wrapped lines
    secret_values = {f"generated {k}": v for k, v in values.items()
                     if not k.endswith("CONNECTION_STRING")}
    secret_values |= {f"tenant secret #{i} (hint {v[:3]})": v
                      for i, v in enumerate(sorted(run.initial | tenant_secrets(sim)))}
    searched = [(what, form) for what, value in secret_values.items()
                for form in forms(value, parts=True)]
    searched += [(k, form) for k, v in values.items() if k.endswith("CONNECTION_STRING")
                 for form in forms(v, parts=False)]
    found = sorted({(what, where) for what, form in searched
                    for where, text in texts.items() if form in text})
    assert not found, "secrets leaked (what, where): " + "; ".join(map(str, found))

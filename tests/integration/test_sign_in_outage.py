"""Entra unreachable for longer than azure-core's retries, in the middle of an unattended run.

The token endpoint of migrator.sim answers every request with 503 (then, in the second case,
cuts every connection) when `apply` starts with a fresh credential; azure-identity gives up
after azure-core's retries and raises ClientAuthenticationError "HTTP Error: 503". The engine
must treat that as it treats a 503 from ARM (transient: wait and try again, bounded) instead of
stopping the run with "sign-in failed". Here the outage ends at the engine's first pause.
An Entra refusal (a wrong secret, AADSTS7000215) is not retried: the command fails at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import Sim

from migrator.cloud.changes import CloudChanges
from migrator.cloud.errors import SignInError, UntrustedEndpoint
from migrator.cloud.factory import managed_identity_credential
from migrator.cloud.whoami import signed_in
from migrator.execute.engine import ApplyOptions, Engine
from migrator.execute.journal import SqliteJournal
from migrator.execute.stash import FileStash
from migrator.plan import PlanOptions, build_plan
from migrator.scan import Scanner

pytestmark = pytest.mark.integration

ESTATE = Path(__file__).parents[1] / "fixtures" / "execute_estate.yaml"
RUNBOOK_ESTATE = Path(__file__).parents[1] / "fixtures" / "runbook_estate.yaml"


@pytest.fixture
def estate_path() -> Path:
    return ESTATE


def _engine(sim: Sim, tmp_path: Path, sleeps: list[float], *, secret: str | None = None
            ) -> Engine:
    plan = build_plan(Scanner(sim.factory(), workers=2).run(),
                      PlanOptions(name="outage", tool_version="test"))

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        sim.server.faults.update({"rates": {}})  # the outage ends at the engine's first pause

    cloud = CloudChanges(sim.factory_with(sim.credential(secret=secret)))
    return Engine(plan, SqliteJournal(tmp_path / "j.sqlite"),
                  FileStash(tmp_path / "s.stash", tmp_path / "keys" / "stash.key"), cloud,
                  sleep=sleep)


@pytest.mark.parametrize("kind", ["503", "drop"])
def test_apply_waits_out_an_entra_outage(sim: Sim, tmp_path: Path, kind: str,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIGRATOR_STASH_KEY_FILE", str(tmp_path / "keys" / "stash.key"))
    sleeps: list[float] = []
    engine = _engine(sim, tmp_path, sleeps)
    sim.server.faults.update({"rates": {"entra": {kind: 1.0}}})

    outcomes = engine.apply(ApplyOptions(apps=("solo-api",), soak=timedelta(0),
                                         health_timeout=30, replication_timeout=30))

    assert [(o.app, o.outcome) for o in outcomes] == [("solo-api", "done")], outcomes
    assert sim.server.middleware.counts[f"entra:{kind}"] >= 2  # more than one SDK try failed
    assert sleeps, "the engine did not wait for Entra"


def test_a_refused_sign_in_is_not_retried(sim: Sim, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIGRATOR_STASH_KEY_FILE", str(tmp_path / "keys" / "stash.key"))
    sleeps: list[float] = []
    engine = _engine(sim, tmp_path, sleeps, secret="not-the-secret")

    with pytest.raises(SignInError, match="AADSTS7000215") as raised:
        engine.apply(ApplyOptions(apps=("solo-api",), soak=timedelta(0)))

    assert not raised.value.transient
    assert sleeps == []


def test_the_runbook_identity_waits_out_a_managed_identity_endpoint_outage(
        start_sim: Callable[[Path], Sim], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The runbook signs in with the Automation account's managed identity. Its endpoint
    answering 503 (in App Service's `{"statusCode", "message"}` shape, which MSAL turns into
    "(invalid_scope) 503, ...") is an outage to wait out, and says so, not "managed identity
    configuration not found"."""
    sim = start_sim(RUNBOOK_ESTATE)
    account = next(iter(sim.tenant.automation_accounts.values()))
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"{sim.base_url}/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", sim.tenant.identity_header_for(account.id))
    monkeypatch.setenv("MIGRATOR_STASH_KEY_FILE", str(tmp_path / "keys" / "stash.key"))
    credential = sim.track(managed_identity_credential())
    factory = sim.factory_with(credential)
    with pytest.raises(UntrustedEndpoint) as untrusted:  # a set-up fault: not waited out
        signed_in(factory)
    assert not untrusted.value.transient
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", sim.ca_bundle)
    monkeypatch.setenv("SSL_CERT_FILE", sim.ca_bundle)
    credential = sim.track(managed_identity_credential())
    factory = sim.factory_with(credential)
    sim.server.faults.update({"rates": {"msi": {"503": 1.0}}})
    with pytest.raises(SignInError) as raised:
        signed_in(factory)
    assert raised.value.transient
    assert str(raised.value) == (
        "sign-in failed: the managed-identity endpoint answered 503: The service is "
        "temporarily unavailable (injected by migrator.sim).")

    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        # A real pause: MSAL keeps a managed-identity endpoint's 429/5xx answer for its
        # Retry-After (5 s without one) and answers from it (msal/throttled_http_client.py),
        # so only a backoff longer than that reaches the endpoint again.
        sleeps.append(seconds)
        sim.server.faults.update({"rates": {}})
        time.sleep(seconds)

    sim.server.faults.update({"rates": {}})
    # As the runbook does: scan and plan signed in as the account (the estate's operator has
    # no rights), with a credential of its own, then apply with a fresh one as the outage starts.
    plan = build_plan(Scanner(sim.factory_with(sim.track(managed_identity_credential())),
                              workers=2).run(), PlanOptions(name="outage", tool_version="test"))
    engine = Engine(plan, SqliteJournal(tmp_path / "j.sqlite"),
                    FileStash(tmp_path / "s.stash", tmp_path / "keys" / "stash.key"),
                    CloudChanges(factory), sleep=sleep)
    sim.server.faults.update({"rates": {"msi": {"503": 1.0}}})

    outcomes = engine.apply(ApplyOptions(apps=("solo-api",), soak=timedelta(0),
                                         health_timeout=30, replication_timeout=30))

    assert [(o.app, o.outcome) for o in outcomes] == [("solo-api", "done")], outcomes
    assert sleeps

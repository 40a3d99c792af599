"""`migrator demo`: the tool against the built-in simulated tenant, start to finish.

Starts `migrator.sim` in process on the bundled sample estate and runs the same code path as
against Azure (only the cloud profile differs). It shows what the operator can see (every site
and slot, its identity, the names of its settings, the simulator's independent verdict on its
health), then the scan: every service-principal secret, the principal behind it and what that
principal may do; then the plan of the migration, written to `plans/` with its report; then
it migrates one app end to end and shows it healthy, swaps another and rolls it back, and
migrates a third whose secret a release pipeline also uses: the sign-in logs refuse its revoke.
"""

from __future__ import annotations

import ssl
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from importlib import resources
from pathlib import Path

import httpx

from migrator import __version__
from migrator.cloud.changes import CloudChanges
from migrator.cloud.factory import ClientFactory, secret_credential
from migrator.cloud.profiles import load_profile
from migrator.cloud.records import SiteRecord, SubscriptionRecord
from migrator.cloud.web import WebAdapter
from migrator.execute.engine import ApplyOptions, AppOutcome, Engine
from migrator.execute.journal import SqliteJournal
from migrator.execute.stash import FileStash
from migrator.inventory import Inventory
from migrator.plan import Plan, PlanOptions, build_plan
from migrator.plan.model import STAGES
from migrator.scan import Scanner


@dataclass(frozen=True)
class SiteView:
    site: SiteRecord
    app_setting_names: tuple[str, ...]
    connection_string_names: tuple[str, ...]
    healthy: bool
    credential: str  # how the app signs in now, as the simulator's runtime resolved it


@dataclass(frozen=True)
class DemoResult:
    estate: str
    base_url: str
    subscriptions: tuple[SubscriptionRecord, ...]
    sites: tuple[SiteView, ...]
    inventory: Inventory
    plan: Plan
    acts: tuple[DemoAct, ...] = ()


@dataclass(frozen=True)
class DemoAct:
    """One thing the demo did to an app, and the simulator's verdict on its health."""

    title: str
    app: str
    outcome: AppOutcome
    healthy_before: bool
    healthy_after: bool
    credential_after: str  # how the app signs in afterwards, as the simulator resolved it


def sample_estate() -> Path:
    """The bundled sample estate (a file inside the installed package)."""
    return Path(str(resources.files("migrator.sim").joinpath("samples/contoso.yaml")))


def run_demo(estate: Path | None = None, *, plan_name: str = "demo",
             progress: Callable[[str], None] = lambda _: None) -> DemoResult:
    from migrator.sim.estate import load_estate
    from migrator.sim.server import SimServer
    from migrator.sim.state import SHORT_DELAYS

    path = estate or sample_estate()
    spec = load_estate(path)
    with tempfile.TemporaryDirectory(prefix="migrator-demo-") as state_dir, \
            SimServer(spec, Path(state_dir), delays=SHORT_DELAYS) as endpoints:
        progress(f"simulated tenant {endpoints.tenant_id} at {endpoints.base_url}")
        progress(f"Azure's propagation delays shortened for the demo: a new identity is known "
                 f"after {SHORT_DELAYS.replication:g} s, a role assignment takes effect after "
                 f"{SHORT_DELAYS.rbac:g} s (minutes in Azure)")
        profile = load_profile(str(endpoints.profile_path))
        credential = secret_credential(profile, endpoints.tenant_id,
                                       endpoints.operator_client_id, endpoints.operator_secret)
        with ClientFactory(profile, credential) as factory, httpx.Client(
                base_url=endpoints.base_url,
                verify=ssl.create_default_context(cafile=str(endpoints.ca_bundle))) as sim:
            web = WebAdapter(factory)
            subscriptions = web.subscriptions()
            views: list[SiteView] = []
            for sub in subscriptions:
                progress(f"reading sites in {sub.name}")
                for site in web.sites(sub.id):
                    settings, strings = web.setting_names(site)
                    slot = f"/slots/{site.slot}" if site.slot else ""
                    probe = sim.get(f"/_sites/{site.name}{slot}/healthz").json()
                    views.append(SiteView(site, tuple(settings), tuple(strings),
                                          probe.get("status") == "healthy",
                                          str(probe.get("credential", "?"))))
            progress("scanning for service-principal secrets")
            inventory = Scanner(factory).run()
            progress("planning the migration")
            plan = build_plan(inventory, PlanOptions(name=plan_name, tool_version=__version__))
            acts = _migrate(plan, factory, sim, Path(state_dir), progress)
        return DemoResult(str(path), endpoints.base_url, tuple(subscriptions), tuple(views),
                          inventory, plan, acts)


DEMO_MIGRATE = "inventory-api"  # one principal, one app: migrated end to end
DEMO_ROLLBACK = "billing-api"  # swapped to its shared identity, then rolled back
DEMO_HELD = "catalog-api"  # its secret is also a release pipeline's: the revoke is refused
# The soak the demo gives the held revoke: long enough that the pipeline, signing in every few
# seconds, is never quiet for it while the demo runs.
DEMO_HELD_SOAK = timedelta(minutes=1)


def _migrate(plan: Plan, factory: ClientFactory, sim: httpx.Client, state_dir: Path,
             progress: Callable[[str], None]) -> tuple[DemoAct, ...]:
    """Carry out part of the plan, as `migrator apply` and `migrator rollback` would: one app
    all the way (the soak period shortened to nothing for the demo), one swapped and undone."""
    names = {a.name for a in plan.apps}
    if not {DEMO_MIGRATE, DEMO_ROLLBACK} <= names:
        return ()
    from migrator.sim.state import SHORT_DELAYS


    def health(app: str) -> tuple[bool, str]:
        site, _, slot = app.partition("/")
        probe = sim.get(f"/_sites/{site}" + (f"/slots/{slot}" if slot else "") + "/healthz")
        body = probe.json()
        return body.get("status") == "healthy", str(body.get("credential", "?"))

    journal = SqliteJournal(state_dir / "demo.journal.sqlite")
    stash = FileStash(state_dir / "demo.stash", state_dir / "keys" / "stash.key")
    engine = Engine(plan, journal, stash, CloudChanges(factory))
    # The simulator's sign-in logs lag as Entra's do, shortened like its other delays.
    lag = timedelta(seconds=SHORT_DELAYS.sign_in_ingestion + 1)

    def until_judged(app: str, soak: timedelta) -> AppOutcome:
        """Apply all stages; while the revoke waits for the logs to cover the swap, wait as
        an operator would, and apply again (bounded)."""
        options = ApplyOptions(apps=(app,), soak=soak, health_timeout=30, sign_in_delay=lag)
        outcome = engine.apply(options)[0]
        for _ in range(10):
            if outcome.outcome != "waiting" or "sign-in logs" not in outcome.message:
                break
            time.sleep(lag.total_seconds() / 2)
            outcome = engine.apply(options)[0]
        return outcome

    acts = []
    script: list[tuple[str, str, Callable[[], AppOutcome]]] = [
        ("migrate: identity, grant, swap, revoke (soak shortened for the demo)", DEMO_MIGRATE,
         lambda: until_judged(DEMO_MIGRATE, timedelta(0))),
        ("migrate up to the swap", DEMO_ROLLBACK,
         lambda: engine.apply(ApplyOptions(apps=(DEMO_ROLLBACK,), stages=STAGES[:3],
                                           health_timeout=30))[0]),
        ("roll back completely", DEMO_ROLLBACK, lambda: engine.rollback(DEMO_ROLLBACK)),
        ("migrate; the revoke is judged on the sign-in logs", DEMO_HELD,
         lambda: until_judged(DEMO_HELD, DEMO_HELD_SOAK)),
    ]
    if DEMO_HELD not in names:
        script.pop()
    try:
        for title, app, run in script:
            progress(f"{title}: {app}")
            before, _ = health(app)
            outcome = run()
            after, credential = health(app)
            acts.append(DemoAct(title, app, outcome, before, after, credential))
    finally:
        journal.close()
    return tuple(acts)

"""The estate generator: valid, deterministic, the requested shape, and never a secret in the text.

Generated estates feed benchmarks and load tests, so a generator bug would show up as a
"slow" or "broken" simulator far from its cause; these tests pin the promises down here.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from migrator.sim.catalog import GRAPH_APP_ROLES
from migrator.sim.estate import (
    EstateSpec,
    SiteSpec,
    SlotSpec,
    iter_references,
    load_estate,
    parse_estate,
)
from migrator.sim.generate import (
    OPERATOR,
    dump_estate,
    generate_estate,
    render_estate_yaml,
    write_estate,
)
from migrator.sim.runtime import Runtime
from migrator.sim.state import Tenant, build_tenant

ENTRA_SECRET = re.compile(r"[a-zA-Z0-9_~.-]{3}\dQ~[a-zA-Z0-9_~.-]{31,34}")
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
BLOB_READ = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read"

SIZES = [  # subscriptions, apps, shared principals, seed
    (1, 0, 0, 0),
    (1, 1, 0, 0),
    (1, 25, 2, 1),
    (3, 100, 5, 2),
    (7, 300, 20, 3),
    (20, 400, 50, 4),
]


def sites_of(spec: EstateSpec) -> Iterator[tuple[str, str, SiteSpec]]:
    """(subscription, resource group, site) for every site."""
    for sub in spec.subscriptions:
        for rg in sub.resource_groups:
            for site in rg.sites:
                yield sub.name, rg.name, site


def principals_used(target: SiteSpec | SlotSpec) -> set[str]:
    """Names of the principals whose secret a site or slot holds."""
    values = list(target.app_settings.values())
    values += [c.value for c in target.connection_strings.values()]
    return {m.group(1) for v in values for m in iter_references(v)
            if m.group(2).startswith("secrets[")}


def arm_scope(tenant: Tenant, scope: str) -> str:
    """An estate scope (`/subscriptions/<name>/...`) with the subscription's id, as ARM has it."""
    _, _, name, rest = scope.split("/", 3)
    sid = next(s.id for s in tenant.subscriptions.values() if s.name == name)
    return f"/subscriptions/{sid}/{rest}"


@pytest.mark.parametrize(("subscriptions", "apps", "shared", "seed"), SIZES)
def test_output_loads_and_has_the_requested_shape(subscriptions: int, apps: int, shared: int,
                                                  seed: int) -> None:
    text = render_estate_yaml(subscriptions=subscriptions, apps=apps, shared_principals=shared,
                              secret_share=0.6, slots=0.1, seed=seed)
    spec = parse_estate(text, "generated")  # validation and check_references

    assert [s.name for s in spec.subscriptions] == [f"sub-{i:03d}" for i in range(subscriptions)]
    sites = list(sites_of(spec))
    assert len(sites) == apps
    per_sub = Counter(sub for sub, _, _ in sites)
    assert max(per_sub.values(), default=0) - min(per_sub.values(), default=0) <= 1
    for sub in spec.subscriptions:
        for rg in sub.resource_groups:
            assert len(rg.sites) <= 25
            assert len(rg.key_vaults) == 1

    holders = [site for _, _, site in sites if principals_used(site)]
    assert abs(len(holders) - 0.6 * apps) <= 1
    with_slot = [site for _, _, site in sites if site.slots]
    assert abs(len(with_slot) - 0.1 * apps) <= 1
    assert all([slot.name for slot in site.slots] == ["staging"] for site in with_slot)

    users: dict[str, set[str]] = {}
    for _, _, site in sites:
        assert len(principals_used(site)) <= 1
        for slot in site.slots:  # a slot uses its site's principal, or none
            assert principals_used(slot) <= principals_used(site)
        for name in principals_used(site):
            users.setdefault(name, set()).add(site.name)
    assert sum(len(names) >= 2 for names in users.values()) == shared
    assert len(spec.principals) == 1 + len(users)  # the operator, and no unused principal

    kinds = Counter(site.kind for _, _, site in sites)
    if apps >= 300:
        assert set(kinds) == {"app", "app,linux", "functionapp", "functionapp,linux"}


def test_same_seed_same_bytes_other_seed_other_text() -> None:
    render = functools.partial(render_estate_yaml, subscriptions=4, apps=200,
                               shared_principals=6, slots=0.2)
    first = render(seed=7)
    assert render(seed=7) == first
    assert render(seed=8) != first
    assert dump_estate(generate_estate(subscriptions=4, apps=200, shared_principals=6,
                                       slots=0.2, seed=7)) == first


def test_no_secret_text_anywhere() -> None:
    spec = generate_estate(subscriptions=5, apps=800, shared_principals=30, seed=11)
    text = dump_estate(spec)
    assert ENTRA_SECRET.search(text) is None
    assert "Q~" not in text
    assert all(secret.value is None for p in spec.principals for secret in p.secrets)
    for sub in spec.subscriptions:
        for rg in sub.resource_groups:
            for vault in rg.key_vaults:
                assert all("not-a-secret" in v for v in vault.secrets.values())


def test_shared_principals_span_subscriptions() -> None:
    spec = generate_estate(subscriptions=6, apps=600, shared_principals=25, seed=5)
    subs_of: dict[str, set[str]] = {}
    for sub, _, site in sites_of(spec):
        for name in principals_used(site):
            subs_of.setdefault(name, set()).add(sub)
    shared = [subs for name, subs in subs_of.items() if name.startswith("shared-")]
    assert len(shared) == 25
    assert all(len(subs) >= 2 for subs in shared)


def test_operator_owns_every_subscription() -> None:
    spec = generate_estate(subscriptions=9, apps=90, seed=1)
    assert spec.operator == OPERATOR
    operator = next(p for p in spec.principals if p.name == OPERATOR)
    assert operator.graph_app_roles == ["Application.ReadWrite.All",
                                        "AppRoleAssignment.ReadWrite.All"]
    owned = {ra.scope for ra in spec.role_assignments
             if ra.principal == OPERATOR and ra.role == "Owner"}
    assert owned == {f"/subscriptions/{s.name}" for s in spec.subscriptions}


def test_a_few_principals_are_expired_or_disabled() -> None:
    spec = generate_estate(subscriptions=4, apps=2000, seed=3)
    others = [p for p in spec.principals if p.name != OPERATOR]
    expired = [p for p in others if all(s.expires is not None for s in p.secrets)]
    disabled = [p for p in others if not p.enabled]
    assert 0 < len(expired) <= 0.1 * len(others)
    assert 0 < len(disabled) <= 0.1 * len(others)
    assert all(s.expires.isoformat() == "2020-01-01" for p in expired for s in p.secrets
               if s.expires is not None)


def test_variants_of_secret_placement_are_all_present() -> None:
    spec = generate_estate(subscriptions=3, apps=600, seed=2)
    settings = [k for _, _, site in sites_of(spec) for k in site.app_settings]
    assert "AZURE_CLIENT_SECRET" in settings
    assert "AzureAd__ClientSecret" in settings
    assert any(k.endswith("__clientSecret") for k in settings)
    sql = [c for _, _, site in sites_of(spec) for c in site.connection_strings.values()]
    assert sql
    assert all(c.type == "SQLAzure" and "Active Directory Service Principal" in c.value
               for c in sql)
    codes = Counter(site.code for _, _, site in sites_of(spec))
    assert codes["client-secret"] > 0
    assert codes["default-credential"] > codes["client-secret"]
    plain = [site for _, _, site in sites_of(spec) if not principals_used(site)]
    assert any("APPINSIGHTS_INSTRUMENTATIONKEY" in site.app_settings for site in plain)


def test_built_tenant_resolves_secrets_and_grants_what_sites_need() -> None:
    spec = generate_estate(subscriptions=3, apps=300, shared_principals=8, slots=0.3, seed=9)
    tenant = build_tenant(spec)
    principal_specs = {p.name: p for p in spec.principals}
    checked = healthy = 0
    for _, _, site in sites_of(spec):
        names = principals_used(site)
        if not names:
            continue
        (name,) = names
        targets: list[SiteSpec | SlotSpec] = [site, *site.slots]
        for target in targets:
            app = tenant.webapp(site.name, target.name if isinstance(target, SlotSpec) else None)
            assert app is not None
            if "AZURE_CLIENT_SECRET" in app.app_settings:
                registration = tenant.app_by_app_id(app.app_settings["AZURE_CLIENT_ID"])
                assert registration is not None
                assert registration.display_name == name
                secret = app.app_settings["AZURE_CLIENT_SECRET"]
                assert secret in [pw.secret for pw in registration.passwords]
                assert ENTRA_SECRET.fullmatch(secret)
                checked += 1
            for cs in app.connection_strings.values():
                assert "@" not in cs.value  # every reference resolved
        if not principal_specs[name].enabled or principal_specs[name].secrets[0].expires:
            continue  # deliberately broken: its site is unhealthy with its secret
        oid = tenant.names[name]
        for need in site.needs:
            if need.role_action is not None:
                assert need.scope is not None
                assert tenant.can(oid, need.role_action, arm_scope(tenant, need.scope),
                                  data=True)
            elif need.key_vault_secret is not None:
                vault_name, secret_name = need.key_vault_secret.split("/")
                vault = tenant.vaults[vault_name.lower()]
                assert secret_name in vault.secrets
                assert any(ap.object_id == oid and "get" in ap.secrets
                           for ap in vault.access_policies)
            elif need.graph_app_role is not None:
                assert need.graph_app_role in tenant.graph_roles_of(oid)
            elif need.sql is not None:
                assert any(oid in db.users for s in tenant.sql_servers.values()
                           for db in s.databases.values())
        healthy += 1
    assert checked > 50
    assert healthy > 50


def test_every_site_is_healthy_with_its_secret_unless_its_principal_is_broken() -> None:
    # The simulator's own app runtime is the oracle: needs match rights for every variant of
    # secret placement (trio, AzureAd__*, hard-wired, Functions connection, SQL).
    spec = generate_estate(subscriptions=3, apps=400, shared_principals=10, slots=0.3, seed=12)
    tenant = build_tenant(spec)
    runtime = Runtime(tenant)
    principal_specs = {p.name: p for p in spec.principals}
    unhealthy_expected = healthy_seen = 0
    for _, _, site in sites_of(spec):
        names = principals_used(site)
        broken = any(not principal_specs[n].enabled or principal_specs[n].secrets[0].expires
                     for n in names)
        targets: list[SiteSpec | SlotSpec] = [site, *site.slots]
        for target in targets:
            app = tenant.webapp(site.name, target.name if isinstance(target, SlotSpec) else None)
            assert app is not None
            health = runtime.probe(app)
            if broken:
                assert not health.healthy, health.as_json()
                unhealthy_expected += 1
            else:
                assert health.healthy, health.as_json()
                healthy_seen += bool(target.needs)
    assert unhealthy_expected > 0
    assert healthy_seen > 200


def test_already_managed_sites_hold_their_rights() -> None:
    spec = generate_estate(subscriptions=2, apps=400, secret_share=0.3, seed=4)
    tenant = build_tenant(spec)
    managed = [site for _, _, site in sites_of(spec) if site.identity == "system" and site.needs]
    assert managed
    for site in managed:
        oid = tenant.names[site.name]
        for need in site.needs:
            assert need.role_action == BLOB_READ
            assert need.scope is not None
            assert tenant.can(oid, BLOB_READ, arm_scope(tenant, need.scope), data=True)


def test_write_estate_then_load_estate(tmp_path: Path) -> None:
    spec = generate_estate(subscriptions=2, apps=50, shared_principals=3, seed=6)
    path = tmp_path / "estate.yaml"
    size = write_estate(spec, path)
    assert size == path.stat().st_size
    assert load_estate(path) == spec
    assert path.read_bytes().decode("utf-8") == render_estate_yaml(
        subscriptions=2, apps=50, shared_principals=3, seed=6)


def test_dump_estate_round_trips_a_hand_written_estate() -> None:
    spec = parse_estate((FIXTURES / "small.yaml").read_text(encoding="utf-8"))
    assert parse_estate(dump_estate(spec)) == spec


@pytest.mark.parametrize(
    "kwargs",
    [
        {"subscriptions": 0, "apps": 10},
        {"subscriptions": 1, "apps": -1},
        {"subscriptions": 1, "apps": 10, "secret_share": 1.5},
        {"subscriptions": 1, "apps": 10, "slots": -0.1},
        {"subscriptions": 1, "apps": 10, "secret_share": 0.5, "shared_principals": 3},
        {"subscriptions": 1, "apps": 10, "shared_principals": -1},
    ],
)
def test_impossible_arguments_are_refused(kwargs: dict[str, int | float]) -> None:
    with pytest.raises(ValueError, match=r"."):
        generate_estate(**kwargs)  # type: ignore[arg-type]


@st.composite
def estate_arguments(draw: st.DrawFn) -> dict[str, int | float]:
    apps = draw(st.integers(0, 40))
    share = draw(st.sampled_from([0.0, 0.25, 0.6, 1.0]))
    holders = round(share * apps)
    return {
        "subscriptions": draw(st.integers(1, 4)),
        "apps": apps,
        "secret_share": share,
        "shared_principals": draw(st.integers(0, holders // 2)),
        "slots": draw(st.sampled_from([0.0, 0.1, 0.5, 1.0])),
        "seed": draw(st.integers(0, 2**32)),
    }


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(estate_arguments())
def test_any_small_estate_loads_and_builds(args: dict[str, int | float]) -> None:
    text = render_estate_yaml(**args)  # type: ignore[arg-type]
    spec = parse_estate(text)
    tenant = build_tenant(spec)
    assert len(tenant.sites) == args["apps"]
    assert ENTRA_SECRET.search(text) is None
    holders = sum(bool(principals_used(site)) for _, _, site in sites_of(spec))
    assert holders == round(args["secret_share"] * args["apps"])


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(st.characters(exclude_categories=["Cs"]), min_size=1),
                       st.text(st.characters(exclude_categories=["Cs"])), max_size=5))
def test_any_setting_text_survives_the_yaml_layout(app_settings: dict[str, str]) -> None:
    # Plain when safe, quoted and escaped otherwise: what is read back is what was written.
    estate = {
        "tenant": {"id": "6f1c3b0e-0000-4000-8000-000000000001"},
        "operator": "op",
        "principals": [{"name": "op"}],
        "subscriptions": [{"name": "s", "resource_groups": [
            {"name": "rg", "sites": [{"name": "web", "app_settings": app_settings}]}]}],
    }
    back = yaml.safe_load(dump_estate(estate))
    assert back["subscriptions"][0]["resource_groups"][0]["sites"][0].get(
        "app_settings", {}) == app_settings


def test_graph_roles_used_are_known_to_the_simulator() -> None:
    spec = generate_estate(subscriptions=2, apps=1000, seed=8)
    used = {role for p in spec.principals for role in p.graph_app_roles}
    assert used <= set(GRAPH_APP_ROLES)
    assert "User.Read.All" in used

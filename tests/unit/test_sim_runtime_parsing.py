"""Table tests for the simulator's pure helpers: Key Vault references, fault specs, token
buckets and the service a path belongs to. No server, no network."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from migrator.sim import faults
from migrator.sim.faults import (
    ARM_BUCKETS,
    GRAPH_APP_WRITES,
    FaultConfig,
    FaultError,
    Throttle,
    TokenBucket,
    service_of,
)
from migrator.sim.runtime import parse_kv_reference

# --- Key Vault references ----------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [
    ("@Microsoft.KeyVault(SecretUri=https://kv-orders.vault.azure.net/secrets/db-password)",
     ("kv-orders", "db-password")),
    ("@Microsoft.KeyVault(SecretUri=https://kv-orders.vault.azure.net/secrets/db-password/)",
     ("kv-orders", "db-password")),
    ("@Microsoft.KeyVault(SecretUri=https://kv-orders.vault.azure.net/secrets/db-password/"
     "ec96f02080254f109c51a1f14cdb1931)", ("kv-orders", "db-password")),
    ("@Microsoft.KeyVault(SecretUri=https://kv-cn.vault.azure.cn/secrets/api-key)",
     ("kv-cn", "api-key")),
    ("@Microsoft.KeyVault(VaultName=kv-orders;SecretName=db-password)",
     ("kv-orders", "db-password")),
    ("@Microsoft.KeyVault(VaultName=kv-orders;SecretName=db-password;"
     "SecretVersion=ec96f02080254f109c51a1f14cdb1931)", ("kv-orders", "db-password")),
    ("@Microsoft.KeyVault(SecretName=db-password;VaultName=kv-orders)",
     ("kv-orders", "db-password")),
    ("@microsoft.keyvault(secreturi=https://KV-Orders.vault.azure.net/secrets/db-password)",
     ("KV-Orders", "db-password")),
    ("@Microsoft.KeyVault( VaultName = kv-orders ; SecretName = db-password )",
     ("kv-orders", "db-password")),
    ("  @Microsoft.KeyVault(VaultName=kv-orders;SecretName=db-password)  ",
     ("kv-orders", "db-password")),
], ids=["uri", "uri-slash", "uri-version", "uri-sovereign", "names", "names-version",
        "names-reordered", "case", "spaces", "padded"])
def test_key_vault_references_parse(value: str, expected: tuple[str, str]) -> None:
    assert parse_kv_reference(value) == expected


@pytest.mark.parametrize("value", [
    "",
    "not-a-reference",
    "Microsoft.KeyVault(VaultName=kv-orders;SecretName=db-password)",
    "@Microsoft.KeyVault()",
    "@Microsoft.KeyVault(VaultName=kv-orders;SecretName=db-password",
    "@Microsoft.KeyVault(VaultName=kv-orders)",
    "@Microsoft.KeyVault(SecretName=db-password)",
    "@Microsoft.KeyVault(SecretUri=https://kv-orders.vault.azure.net/keys/db-key)",
    "@Microsoft.KeyVault(SecretUri=https://kv-orders.vault.azure.net/secrets/)",
    "@Microsoft.KeyVault(SecretUri=http://kv-orders.vault.azure.net/secrets/db-password)",
    "@Microsoft.KeyVault(SecretUri=https://kv-orders.vault.azure.net/secrets/a/b/c)",
    "@Microsoft.KeyVault(SecretUri=kv-orders/db-password)",
    "@Microsoft.AppConfiguration(Endpoint=https://ac.azconfig.io; Key=k)",
    "@Microsoft.KeyVault(VaultName=;SecretName=db-password)",
    "@Microsoft.KeyVault(VaultName=kv-orders;SecretName=)",
])
def test_malformed_key_vault_references_are_not_references(value: str) -> None:
    assert parse_kv_reference(value) is None


# --- fault specs from the command line ---------------------------------------------------------


@pytest.mark.parametrize(("specs", "rates"), [
    ([], {}),
    (["arm:429=0.5"], {"arm": {"429": 0.5}}),
    ([" arm:429=0.5 "], {"arm": {"429": 0.5}}),
    (["arm:500=0.1", "arm:503=0.2", "graph:429=1", "entra:drop=0", "msi:503=1.0"],
     {"arm": {"500": 0.1, "503": 0.2}, "graph": {"429": 1.0}, "entra": {"drop": 0.0},
      "msi": {"503": 1.0}}),
    (["arm:429=0.5", "arm:429=0.25"], {"arm": {"429": 0.25}}),
])
def test_fault_specs_parse(specs: list[str], rates: dict[str, dict[str, float]]) -> None:
    config = FaultConfig.from_cli(specs, latency_ms=20, jitter_ms=5, throttle_scale=0.5)

    assert config.rates == rates
    assert (config.latency_ms, config.jitter_ms, config.throttle_scale) == (20, 5, 0.5)


@pytest.mark.parametrize(("specs", "options"), [
    (["bogus"], {}),
    (["arm429=0.5"], {}),
    (["arm:429"], {}),
    (["arm:429=half"], {}),
    (["arm:429=-0.1"], {}),
    (["arm:429=1.5"], {}),
    (["nowhere:500=0.1"], {}),
    (["arm:418=0.1"], {}),
    ([], {"latency_ms": -1}),
    ([], {"jitter_ms": -1}),
    ([], {"throttle_scale": -0.5}),
    (["arm:429=0.5.1"], {}),
    (["arm:429=."], {}),
])
def test_bad_fault_specs_raise_fault_error(specs: list[str], options: dict[str, float]) -> None:
    with pytest.raises(FaultError):
        FaultConfig.from_cli(specs, **options)


# --- token buckets -----------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(faults, "time", SimpleNamespace(monotonic=fake))
    return fake


def test_bucket_starts_full_and_drains_one_token_a_take(clock: Clock) -> None:
    bucket = TokenBucket(4, 0.2)

    taken = [bucket.take() for _ in range(5)]

    assert taken[:4] == [(True, 3.0, 0.0), (True, 2.0, 0.0), (True, 1.0, 0.0), (True, 0.0, 0.0)]
    assert taken[4] == (False, 0.0, pytest.approx(5.0))  # one token at 0.2/s


@pytest.mark.parametrize(("elapsed", "expected"), [
    (0.0, (False, 0.0, 5.0)),
    (2.5, (False, 0.5, 2.5)),
    (5.0, (True, 0.0, 0.0)),
    (12.5, (True, 1.5, 0.0)),
    (1000.0, (True, 3.0, 0.0)),  # never above capacity
])
def test_bucket_refills_at_its_rate_up_to_capacity(clock: Clock, elapsed: float,
                                                   expected: tuple[bool, float, float]) -> None:
    bucket = TokenBucket(4, 0.2)
    for _ in range(4):
        bucket.take()
    clock.now += elapsed

    allowed, left, wait = bucket.take()

    assert (allowed, left, wait) == (expected[0], pytest.approx(expected[1]),
                                     pytest.approx(expected[2]))


def test_bucket_without_refill_asks_for_a_minute(clock: Clock) -> None:
    bucket = TokenBucket(1, 0.0)
    assert bucket.take() == (True, 0.0, 0.0)
    clock.now += 3600
    assert bucket.take() == (False, 0.0, 60.0)


@pytest.mark.parametrize(("scale", "kind", "capacity", "refill"), [
    (1.0, "read", 250, 25.0),
    (1.0, "write", 200, 10.0),
    (1.0, "delete", 200, 10.0),
    (0.02, "read", 5, 0.5),
    (0.02, "write", 4, 0.2),
    (0.001, "write", 1, 0.01),  # at least one token
])
def test_throttle_scales_azures_arm_buckets(clock: Clock, scale: float, kind: str,
                                            capacity: int, refill: float) -> None:
    throttle = Throttle()
    key = ("arm", "sub", "caller", kind)

    allowed = [throttle.take(scale, key, ARM_BUCKETS[kind])[0] for _ in range(capacity + 1)]
    assert allowed == [True] * capacity + [False]

    clock.now += 1.0 / refill + 1e-6  # one token's time (and a hair for rounding)
    assert throttle.take(scale, key, ARM_BUCKETS[kind])[0] is True
    assert throttle.take(scale, key, ARM_BUCKETS[kind])[0] is False


def test_throttle_keeps_a_bucket_per_key_and_rebuilds_on_a_new_scale(clock: Clock) -> None:
    throttle = Throttle()
    reads = ("arm", "sub", "alice", "read")
    for _ in range(5):
        assert throttle.take(0.02, reads, ARM_BUCKETS["read"])[0]
    assert throttle.take(0.02, reads, ARM_BUCKETS["read"])[0] is False
    # Another caller, another subscription, or writes: other buckets.
    for other in [("arm", "sub", "bob", "read"), ("arm", "sub2", "alice", "read"),
                  ("arm", "sub", "alice", "write")]:
        assert throttle.take(0.02, other, ARM_BUCKETS[other[3]])[0] is True
    assert throttle.take(0.002, ("graph", "", "alice", "writes"), GRAPH_APP_WRITES)[1] == 5.0
    # Graph's buckets at another scale leave ARM's as they were...
    assert throttle.take(0.02, reads, ARM_BUCKETS["read"])[0] is False
    # ...and a new scale for a bucket rebuilds it, full.
    assert throttle.take(0.04, reads, ARM_BUCKETS["read"]) == (True, 9.0, 0.0)
    throttle.reset()
    assert throttle.take(0.02, reads, ARM_BUCKETS["read"]) == (True, 4.0, 0.0)


# --- which service a path belongs to -----------------------------------------------------------


TENANT = "6f1c3b0e-0000-4000-8000-000000000001"


@pytest.mark.parametrize(("path", "service"), [
    ("/v1.0", "graph"),
    ("/v1.0/servicePrincipals", "graph"),
    ("/v1.0/applications/abc/addPassword", "graph"),
    ("/msi/token", "msi"),
    (f"/{TENANT}/oauth2/v2.0/token", "entra"),
    (f"/{TENANT}/v2.0/.well-known/openid-configuration", "entra"),
    (f"/{TENANT}/.well-known/openid-configuration", "entra"),
    (f"/{TENANT}/discovery/v2.0/keys", "entra"),
    ("/subscriptions", "arm"),
    ("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/orders-api", "arm"),
    ("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/orders-api"
     "/config/appsettings/list", "arm"),
    ("/providers/Microsoft.Authorization/roleAssignments", "arm"),
    ("/", None),
    ("/_sim/faults", None),
    ("/_sim/state", None),
    ("/_sites/orders-api/healthz", None),
    ("/_sites/orders-api/slots/staging/healthz", None),
])
def test_service_of_paths(path: str, service: str | None) -> None:
    assert service_of(path) == service

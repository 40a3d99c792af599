"""Microsoft Graph's throttling, as the simulator applies it and the scan lives with it (issue 12).

Graph throttles identity calls by resource units per application and tenant per 10 s (3,500,
5,000 or 8,000 by tenant size; GET applications costs 2, `$select` one less, `$expand` one
more) and by write quotas (3,000 per application and tenant per 2 min 30 s, 18,000 per tenant
per 5 min), answering 429 with `Retry-After`, `x-ms-throttle-scope`,
`x-ms-throttle-information` and an `innerError` carrying the date and request ids
(learn.microsoft.com/graph/throttling-limits, learn.microsoft.com/graph/throttling). Buckets
are scaled down here (`throttle_scale`) so that a handful of calls reach them.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from conftest import Sim

from migrator.inventory import Inventory
from migrator.scan import Scanner
from migrator.sim.faults import graph_cost

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("method", "path", "query", "cost"), [
    ("GET", "/v1.0/applications", "", (2, 0)),
    ("GET", "/v1.0/applications", "$select=id,appId", (1, 0)),
    ("GET", "/v1.0/applications/abc", "", (1, 0)),
    ("GET", "/v1.0/servicePrincipals", "%24expand=appRoleAssignments", (2, 0)),
    ("GET", "/v1.0/servicePrincipals", "$top=5&$select=id", (1, 0)),  # never under 1
    ("GET", "/v1.0/servicePrincipals/abc/appRoleAssignments", "", (2, 0)),
    ("POST", "/v1.0/applications/abc/removePassword", "", (1, 1)),
    ("DELETE", "/v1.0/servicePrincipals/abc/appRoleAssignments/x", "", (1, 1)),
])
def test_request_costs_follow_graphs_table(method: str, path: str, query: str,
                                           cost: tuple[int, int]) -> None:
    assert graph_cost(method, path, query) == cost


def _graph(sim: Sim) -> tuple[httpx.Client, dict[str, str]]:
    token = sim.credential().get_token(sim.profile.graph_scope).token
    return sim.track(sim.http()), {"Authorization": f"Bearer {token}"}


def test_resource_units_run_out_with_graphs_429(sim: Sim) -> None:
    http, headers = _graph(sim)
    sim.server.faults.throttle_scale = 0.002  # tenant size S: 7 units, +0.7/s
    first = http.get("/v1.0/applications", headers=headers)  # 2 units
    assert first.status_code == 200 and first.headers["x-ms-resource-unit"] == "2"
    answers = [http.get("/v1.0/applications", headers=headers) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    throttled = answers[-1]
    assert int(throttled.headers["retry-after"]) >= 1
    assert throttled.headers["x-ms-throttle-information"] == "ResourceUnitLimitExceeded"
    app_id = sim.endpoints.operator_client_id
    assert throttled.headers["x-ms-throttle-scope"] == \
        f"Tenant_Application/ReadWrite/{app_id}/{sim.tenant.id}"
    error = throttled.json()["error"]
    assert error["code"] == "TooManyRequests"
    inner = error["innerError"]
    assert set(inner) >= {"date", "request-id", "client-request-id"}
    assert inner["request-id"] == throttled.headers["request-id"]


def test_writes_run_out_before_resource_units(sim: Sim) -> None:
    """Writes have their own quota: 3,000 per 150 s is far less than 3,500 units per 10 s."""
    http, headers = _graph(sim)
    sim.server.middleware.graph_tenant_size = "L"  # above 500 users: 8,000 units per 10 s
    sim.server.faults.throttle_scale = 0.001  # writes: 3 (+0.02/s); units: 8 (+0.8/s)
    app = sim.tenant.app_by_app_id(sim.client_id("orders-sp"))
    assert app is not None
    url = f"/v1.0/applications/{app.object_id}/removePassword"
    body = {"keyId": "00000000-0000-4000-8000-000000000000"}  # no such key: 400, still a write
    answers = [http.post(url, headers=headers, json=body) for _ in range(4)]
    assert [a.status_code for a in answers] == [400, 400, 400, 429]
    assert answers[-1].headers["x-ms-throttle-information"] == "WriteLimitExceeded"
    assert "/Write/" in answers[-1].headers["x-ms-throttle-scope"]
    assert http.get("/v1.0/applications", headers=headers).status_code == 200  # reads go on


def test_the_scan_reads_everything_through_graphs_throttling(sim: Sim) -> None:
    expected = Scanner(sim.factory(), workers=4).run()
    sim.server.middleware.throttle.reset()
    sim.server.faults.graph_throttle_scale = 0.0006  # Graph alone: 2.1 units, +0.21/s
    throttled = Scanner(sim.factory(), workers=4).run()
    assert sim.server.middleware.counts.get("graph:throttled", 0) > 0  # it was throttled
    assert throttled.complete, throttled.gaps
    assert [p.app_id for p in throttled.principals] == [p.app_id for p in expected.principals]
    assert [(p.graph_roles, p.role_assignments) for p in throttled.principals] == \
        [(p.graph_roles, p.role_assignments) for p in expected.principals]
    def found(inventory: Inventory) -> list[tuple[str, str, str | None]]:  # salts differ
        return [(a.site.name, f.secret.name, f.client_id) for a, f in inventory.findings]

    assert found(throttled) == found(expected)


@pytest.fixture
def estate_path() -> Path:
    return Path(__file__).parents[1] / "fixtures" / "execute_estate.yaml"

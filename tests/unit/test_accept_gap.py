"""Which gaps an `--accept-gap` value covers (issue 11 item 12).

`-s` takes subscription names, so `--accept-gap` must too; and a value that covers nothing
must be refused rather than read as an accepted risk.
"""

from __future__ import annotations

import pytest

from migrator.cloud.records import SubscriptionRecord
from migrator.inventory import Gap, Inventory, ScanStats
from migrator.plan.planner import gap_accepted, unmatched_accepts

PROD = "11111111-1111-4111-8111-111111111111"
RESTRICTED = "22222222-2222-4222-8222-222222222222"
SITE = f"/subscriptions/{PROD}/resourceGroups/rg-a/providers/Microsoft.Web/sites/orders-api"
GAPS = (
    Gap(f"/subscriptions/{RESTRICTED}", "list role assignments", 403, "AuthorizationFailed",
        "the operator may not read role assignments"),
    Gap(SITE, "list app settings", 403, "AuthorizationFailed", "no read of its settings"),
    Gap("graph:/servicePrincipals", "look up principals", None, "RemoteProtocolError",
        "the connection failed"),
    Gap("/subscriptions/typo-sub", "read subscription", 404, "SubscriptionNotFound",
        "not visible"),
)


def inventory() -> Inventory:
    return Inventory(
        tenant_id="t", scanned_at="2026-12-06T00:00:00+00:00",
        subscriptions=(SubscriptionRecord(PROD, "prod", "t"),
                       SubscriptionRecord(RESTRICTED, "Restricted", "t")),
        apps=(), principals=(), gaps=GAPS, stats=ScanStats(0.0, 0, 0, 0, 0.0))


@pytest.mark.parametrize(("accept", "covered"), [
    ("restricted", {0}),             # a subscription's name, any case, is read as its id
    (RESTRICTED, {0}),
    (RESTRICTED.upper(), {0}),
    ("prod", {1}),                   # a subscription covers the gaps inside it
    ("graph", {2}),
    ("rg-a", {1}),                   # a whole segment of the scope
    ("sites/orders-api", {1}),
    ("typo-sub", {3}),               # a subscription given as typed to -s
    ("rg", set()),                   # part of a segment is not a segment
    ("a", set()),                    # before, one letter accepted every gap with an "a"
    ("orders", set()),
    ("", set()),
])
def test_which_gaps_a_value_covers(accept: str, covered: set[int]) -> None:
    inv = inventory()
    assert {i for i, g in enumerate(GAPS) if gap_accepted(g.scope, accept, inv)} == covered


def test_values_that_cover_no_gap_are_named() -> None:
    assert unmatched_accepts(inventory(), ["restricted", "restricetd", "graph", "a"]) == [
        "restricetd", "a"]

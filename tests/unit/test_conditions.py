"""Role-assignment conditions: the simulator's evaluation of the documented format, and the
planner's rule for joining two principals' conditions (never dropping one)."""

from __future__ import annotations

import json

import pytest

from migrator.inventory import RoleGrant
from migrator.plan.model import Decision, RoleAssignment
from migrator.plan.planner import _merged_role
from migrator.sim.conditions import ConditionError, allows, parse

READ = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read"
WRITE = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write"
ACCOUNT = ("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/a")
# Microsoft's example (azure-docs role-based-access-control/conditions-role-assignments-rest.md)
DOCUMENTED = ("((!(ActionMatches{'Microsoft.Storage/storageAccounts/blobServices/containers/"
              "blobs/read'})) OR (@Resource[Microsoft.Storage/storageAccounts/blobServices/"
              "containers:name] StringEquals 'blobs-example-container'))")


def container(name: str) -> str:
    return f"{ACCOUNT}/blobServices/default/containers/{name}"


def test_the_documented_example_reads_one_container_only() -> None:
    assert allows(DOCUMENTED, READ, container("blobs-example-container"))
    assert not allows(DOCUMENTED, READ, container("payroll"))
    assert not allows(DOCUMENTED, READ, ACCOUNT)  # no container: the attribute is unknown
    # the condition only limits reads: other actions of the role pass it
    assert allows(DOCUMENTED, WRITE, container("payroll"))


def test_or_and_not_and_case_insensitive_keywords() -> None:
    either = ("@Resource[Microsoft.Storage/storageAccounts/blobServices/containers:name] "
              "StringEquals 'a' or @Resource[Microsoft.Storage/storageAccounts/blobServices/"
              "containers:name] stringequals 'b'")
    assert allows(either, READ, container("a")) and allows(either, READ, container("b"))
    assert not allows(either, READ, container("c"))
    both = f"ActionMatches{{'{READ}'}} AND NOT (ActionMatches{{'*/write'}})"
    assert allows(both, READ, container("x")) and not allows(both, WRITE, container("x"))
    listed = ("@Resource[Microsoft.Storage/storageAccounts/blobServices/containers:name] "
              "StringEquals {'a', 'b'}")
    assert allows(listed, READ, container("b")) and not allows(listed, READ, container("c"))


def test_an_unknown_attribute_never_grants_whatever_the_operator() -> None:
    for operator in ("StringEquals", "StringNotEquals", "StringNotLike"):
        condition = f"@Resource[Microsoft.Storage/storageAccounts/blobServices/containers/" \
                    f"blobs/tags:project<$key_case_sensitive$>] {operator} 'x'"
        assert not allows(condition, READ, container("x"))
    assert not allows("SubOperationMatches{'Blob.List'}", READ, container("x"))


@pytest.mark.parametrize("text", ["(", "ActionMatches{'a'} AND", "@Resource[x] Resembles 'a'",
                                  "hello", "(ActionMatches{'a'}"])
def test_a_condition_outside_the_subset_is_refused_and_grants_nothing(text: str) -> None:
    with pytest.raises(ConditionError):
        parse(text)
    assert not allows(text, READ, container("a"))


def test_no_condition_allows() -> None:
    assert allows(None, READ, ACCOUNT) and allows("", READ, ACCOUNT)


def grant(condition: str | None) -> RoleGrant:
    return RoleGrant(ACCOUNT, "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1",
                     "Storage Blob Data Reader", condition, "2.0" if condition else None)


def test_two_principals_conditions_are_joined_never_dropped() -> None:
    decisions: list[Decision] = []
    first = _merged_role(None, grant("A"), "app-1", decisions)
    assert (first.condition, first.condition_version) == ("A", "2.0")
    assert _merged_role(first, grant("A"), "app-2", decisions) == first
    joined = _merged_role(first, grant("B"), "app-2", decisions)
    assert joined.condition == "(A) OR (B)" and joined.condition_version == "2.0"
    assert [d.choice for d in decisions] == ["conditions joined with OR"]


def test_an_unconditioned_grant_covers_a_conditioned_one() -> None:
    decisions: list[Decision] = []
    plain = _merged_role(None, grant(None), "app-1", decisions)
    assert plain.condition is None and plain.condition_version is None
    assert _merged_role(plain, grant("A"), "app-2", decisions).condition is None
    conditioned = _merged_role(None, grant("A"), "app-1", decisions)
    assert _merged_role(conditioned, grant(None), "app-2", decisions).condition is None
    assert decisions == []


def test_a_plan_step_names_a_condition_only_when_there_is_one() -> None:
    """Plans written before conditions were copied hold no condition keys: their digests
    (computed over the dump) must not change, or they would be refused as edited."""
    plain = RoleAssignment(scope=ACCOUNT, role_definition_id="r", role_name="Reader",
                           copied_from="app")
    assert "condition" not in plain.model_dump(mode="json")
    assert "condition" not in json.loads(plain.model_dump_json())
    limited = plain.model_copy(update={"condition": DOCUMENTED, "condition_version": "2.0"})
    dumped = limited.model_dump(mode="json")
    assert (dumped["condition"], dumped["condition_version"]) == (DOCUMENTED, "2.0")
    assert RoleAssignment.model_validate(dumped) == limited

"""The operator-rights preflight's pure rules: which permission each step needs, and how ARM's
effective permissions and the token's Graph roles are judged against them."""

from __future__ import annotations

import pytest

from migrator.cloud.records import Permission
from migrator.plan.model import (
    GraphAppRole,
    RemovePasswordCredential,
    Stage,
    Step,
    Undo,
    UpdateAppSettings,
    UpdateSlotConfig,
)
from migrator.plan.preflight import (
    GRAPH,
    HeldRights,
    Verdict,
    action_matches,
    allows,
    judge,
    step_needs,
)

SITE = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/web"
SLOT = SITE + "/slots/staging"


def _step(params: object) -> Step:
    return Step(id="x", title="a step", params=params, undo=Undo(action="a", description="d"))


@pytest.mark.parametrize(("pattern", "action", "expected"), [
    ("*", "Microsoft.Web/sites/write", True),
    ("*/read", "Microsoft.Web/sites/config/read", True),
    ("*/read", "Microsoft.Web/sites/config/list/action", False),  # Reader cannot list secrets
    ("Microsoft.Web/sites/*", "microsoft.web/SITES/config/write", True),  # case-insensitive
    ("Microsoft.ManagedIdentity/userAssignedIdentities/*/assign/action",
     "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action", True),  # empty segment
    ("Microsoft.Web/sites/config/*", "Microsoft.Web/sites/write", False),
])
def test_action_wildcards(pattern: str, action: str, expected: bool) -> None:
    assert action_matches(pattern, action) is expected


def test_a_not_action_excludes_only_within_its_own_entry() -> None:
    contributor_like = Permission(actions=("*",),
                                  not_actions=("Microsoft.Authorization/*/Write",))
    assert not allows([contributor_like], "Microsoft.Authorization/roleAssignments/write")
    rbac_admin = Permission(actions=("Microsoft.Authorization/roleAssignments/*",))
    # another role the caller holds allows it: ARM judges each entry on its own
    assert allows([contributor_like, rbac_admin], "Microsoft.Authorization/roleAssignments/write")


def test_slot_steps_need_slot_actions_and_sticky_names_live_on_the_site() -> None:
    settings = step_needs("web/staging", Stage.SWAP, _step(UpdateAppSettings(
        site_id=SLOT, edits=())))
    assert {(n.scope, n.action) for n in settings} == {
        (SLOT, "Microsoft.Web/sites/slots/config/list/action"),
        (SLOT, "Microsoft.Web/sites/slots/config/write")}
    (sticky,) = step_needs("web/staging", Stage.SWAP, _step(UpdateSlotConfig(
        site_id=SLOT, add_app_setting_names=("A",))))
    assert (sticky.scope, sticky.action) == (SITE, "Microsoft.Web/sites/config/write")


def _remove_password() -> Step:
    return _step(RemovePasswordCredential(app_id="a", application_object_id="o", key_id="k",
                                          hint="abc"))


def test_graph_needs_are_judged_by_the_token_roles() -> None:
    (grant,) = step_needs("web", Stage.GRANT, _step(GraphAppRole(
        resource_id="r", resource_name="Microsoft Graph", app_role_id="i",
        app_role_value="User.Read.All", copied_from="a")))
    (revoke,) = step_needs("web", Stage.REVOKE, _remove_password())
    assert grant.scope == revoke.scope == GRAPH
    only_assign = HeldRights({}, frozenset({"AppRoleAssignment.ReadWrite.All"}))
    verdict = judge([grant, revoke], only_assign)
    # the grant also needs a read role; the revoke an application write role
    assert verdict.missing == (grant, revoke)
    enough = HeldRights({}, frozenset({"AppRoleAssignment.ReadWrite.All",
                                           "Application.ReadWrite.All"}))
    assert judge([grant, revoke], enough).missing == ()


def test_what_cannot_be_checked_is_said_not_refused() -> None:
    (revoke,) = step_needs("web", Stage.REVOKE, _remove_password())
    owned_by = frozenset({"Application.ReadWrite.OwnedBy"})
    unread = judge([revoke], HeldRights({}, owned_by))
    assert unread.missing == () and "whether it owns application o" in unread.unchecked[0][1]
    assert judge([revoke], HeldRights({}, owned_by, owns={"o": True})) == Verdict((), ())
    assert judge([revoke], HeldRights({}, owned_by, owns={"o": False})).missing == (revoke,)
    assert "as an owner of application o" in revoke.wanted
    user = judge([revoke], HeldRights({}, None, "a user's token"))
    assert user.unchecked == ((revoke, "a user's token"),)
    (write,) = [n for n in step_needs("web", Stage.SWAP, _step(UpdateAppSettings(
        site_id=SITE, edits=()))) if n.action.endswith("/write")]
    refused = judge([write], HeldRights({SITE.lower(): "it was refused"}, frozenset()))
    assert refused.missing == () and refused.unchecked == ((write, "it was refused"),)
    held = judge([write], HeldRights({SITE.lower(): (Permission(actions=("*/read",)),)},
                                         frozenset()))
    assert held.missing == (write,)

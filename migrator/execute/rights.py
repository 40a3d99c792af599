"""Reading what the signed-in operator may do, for the preflight (migrator.plan.preflight).

One reader per command: each ARM scope's effective permissions and the Graph token's roles are
read once and kept, so the check before the CLI's prompt and the one `apply` makes itself cost
one set of calls.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from migrator.cloud.changes import CloudChanges
from migrator.cloud.errors import AzureCallError, CloudError
from migrator.cloud.factory import ClientFactory
from migrator.cloud.records import Permission
from migrator.plan.model import Plan
from migrator.plan.preflight import (
    GRAPH,
    HeldRights,
    Need,
    arm_scopes,
    judge,
    owned_applications,
    plan_needs,
    with_rights,
)

USER_TOKEN = ("the operator's Microsoft Graph token lists no application permissions (a "
              "user's token: its rights come from directory roles)")


class RightsReader:
    def __init__(self, cloud: CloudChanges,
                 patient: Callable[[Callable[[], Any]], Any] = lambda call: call()) -> None:
        self.cloud = cloud
        self.patient = patient  # retries transient failures (the engine's _patient)
        self._permissions: dict[str, tuple[Permission, ...] | str] = {}
        self._graph: tuple[frozenset[str] | None, str] | None = None
        self._owns: dict[str, bool | str] = {}  # application object id -> owned, or why not known
        self._operator: str | None = None

    def read(self, needs: Sequence[Need]) -> HeldRights:
        """The operator's rights where `needs` act. A scope whose permissions cannot be read
        is kept with the reason (its needs are then unchecked, not refused)."""
        for scope in arm_scopes(needs):
            if scope in self._permissions:
                continue
            try:
                self._permissions[scope] = self.patient(
                    functools.partial(self.cloud.operator_permissions, scope))
            except (AzureCallError, ValueError) as exc:
                self._permissions[scope] = (f"its permissions at {scope} could not be read "
                                            f"({' '.join(str(exc).split())})")
        if self._graph is None and any(n.scope == GRAPH for n in needs):
            roles = self.patient(self.cloud.operator_graph_roles)
            self._graph = (roles, "" if roles is not None else USER_TOKEN)
        roles, why = self._graph or (None, "")
        for application in owned_applications(needs, roles):
            if application not in self._owns:
                self._owns[application] = self._owner_of(application)
        return HeldRights(self._permissions, roles, why, self._owns)

    def _owner_of(self, application: str) -> bool | str:
        try:
            if self._operator is None:
                self._operator = self.patient(self.cloud.operator_object_id) or ""
            owners = self.patient(functools.partial(self.cloud.application_owners,
                                                    application))
        except AzureCallError as exc:
            return (f"the owners of application {application} could not be read "
                    f"({' '.join(str(exc).split())})")
        return bool(self._operator) and self._operator in owners


def with_operator_rights(factory: ClientFactory, made: Plan) -> tuple[Plan, str | None]:
    """The plan with what the signed-in operator lacks for its steps (a warning in every
    report; `apply` checks again and refuses), and why the check could not run, if it could
    not: that is said, not fatal, for the plan is still worth reviewing."""
    from migrator.cloud.whoami import signed_in

    needs = plan_needs(made)
    if not needs:
        return made, None
    try:
        verdict = judge(needs, RightsReader(CloudChanges(factory)).read(needs))
        operator = signed_in(factory).object_id
    except CloudError as exc:
        return made, f"the operator's own rights were not checked: {' '.join(str(exc).split())}"
    return with_rights(made, verdict, operator), None

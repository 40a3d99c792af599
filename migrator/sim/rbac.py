"""Azure RBAC as the simulator enforces it: built-in role definitions and action matching.

Role ids and action lists are Azure's built-in ones, the published catalog of 146 roles (see
builtin_roles.json), so a plan that copies "Storage Blob Data Reader" by id copies the same role,
with the same actions, as in Azure.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from importlib import resources


@dataclass(frozen=True)
class RoleDefinition:
    id: str  # the GUID
    name: str  # roleName
    description: str
    actions: tuple[str, ...] = ()
    not_actions: tuple[str, ...] = ()
    data_actions: tuple[str, ...] = ()
    not_data_actions: tuple[str, ...] = ()
    # A custom role (estate `role_definitions:`) and the scopes it may be assigned at; a
    # built-in role is assignable everywhere ("/").
    custom: bool = False
    assignable_scopes: tuple[str, ...] = ("/",)

    def allows(self, action: str, *, data: bool) -> bool:
        allow, deny = (
            (self.data_actions, self.not_data_actions)
            if data
            else (self.actions, self.not_actions)
        )
        return any(_match(p, action) for p in allow) and not any(_match(p, action) for p in deny)


@functools.lru_cache(maxsize=4096)
def _pattern(pattern: str) -> re.Pattern[str]:
    """Azure's action wildcards: `*` spans any text, slashes included, and a `*` segment may
    also be empty, so `…/userAssignedIdentities/*/assign/action` covers
    `…/userAssignedIdentities/assign/action` and `*/read` covers every read."""
    parts = pattern.lower().split("/")
    out = ""
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "*":
            out += ".*" if last else "(?:.*/)?"
        else:
            out += ".*".join(re.escape(p) for p in part.split("*")) + ("" if last else "/")
    return re.compile(out)


def action_matches(pattern: str, action: str) -> bool:
    """Whether `action` is one that the role-definition `pattern` (with wildcards) names."""
    return _pattern(pattern).fullmatch(action.lower()) is not None


_match = action_matches


def _load_builtin_roles() -> tuple[RoleDefinition, ...]:
    """Azure's built-in roles as Microsoft publishes them ("Azure built-in roles", the JSON
    block of each role, MicrosoftDocs/azure-docs articles/role-based-access-control/
    built-in-roles/*.md), copied into builtin_roles.json.

    A permission block that carries a delegation condition (Key Vault Data Access
    Administrator may assign only some roles) is dropped rather than honoured without its
    condition: the simulator then denies what Azure might allow, never the other way round."""
    raw = json.loads(resources.files("migrator.sim").joinpath("builtin_roles.json")
                     .read_text(encoding="utf-8"))
    roles = []
    for entry in raw:
        blocks = [b for b in entry["permissions"] if not b.get("condition")]

        def merged(key: str, blocks: list[dict[str, list[str]]] = blocks) -> tuple[str, ...]:
            return tuple(action for block in blocks for action in block.get(key, ()))

        roles.append(RoleDefinition(entry["id"], entry["roleName"], entry["description"],
                                    actions=merged("actions"),
                                    not_actions=merged("notActions"),
                                    data_actions=merged("dataActions"),
                                    not_data_actions=merged("notDataActions")))
    return tuple(roles)


BUILTIN_ROLES: tuple[RoleDefinition, ...] = _load_builtin_roles()

ROLES_BY_NAME: dict[str, RoleDefinition] = {r.name.lower(): r for r in BUILTIN_ROLES}
ROLES_BY_ID: dict[str, RoleDefinition] = {r.id: r for r in BUILTIN_ROLES}


def is_data_action(action: str) -> bool:
    """Data-plane actions (blob reads, secret gets) are matched against dataActions only."""
    lowered = action.lower()
    return any(
        marker in lowered
        for marker in ("/blobs/", "/messages/", "/secrets/", "/keys/", "/certificates/",
                       "/receive/action", "/send/action")
    )


def scope_covers(assigned: str, target: str) -> bool:
    """An assignment at `assigned` applies to `target` and everything below it."""
    a = assigned.rstrip("/").lower()
    t = target.rstrip("/").lower()
    return a in ("", t) or t.startswith(a + "/")

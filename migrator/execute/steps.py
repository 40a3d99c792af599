"""What each kind of plan step does to Azure, how it checks it, and how it is undone.

Every handler has four parts:
- `snapshot` reads the state the step will change (secret-free; values that are secrets go to
  the stash) and returns what the journal records *before* anything is written;
- `do` makes the change; running it again changes nothing (idempotent);
- `verify` reads Azure back and says whether the change is in place;
- `undo` puts back what `snapshot` saw.

Handlers never decide whether to run (the engine does: stages, drift, soak, holds) and never
catch an Azure error to carry on: they raise, and the engine records and restores.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol, TypeVar

from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

from migrator.cloud.changes import CloudChanges, SiteState
from migrator.cloud.errors import PrincipalNotReplicated
from migrator.cloud.records import NewSecret
from migrator.execute.rewrite import (
    RewriteError,
    apply_connection_string_edits,
    apply_setting_edits,
    repin_key_vault_reference,
    replace_secret,
    resolve,
    sql_password,
)
from migrator.execute.stash import Stash
from migrator.plan.model import (
    IDENTITY_CLIENT_ID,
    IDENTITY_NAME,
    IDENTITY_PRINCIPAL_ID,
    IDENTITY_RESOURCE_ID,
    AppPlan,
    AssignUserAssignedIdentity,
    Credential,
    EnableSystemIdentity,
    EnsureUserAssignedIdentity,
    GraphAppRole,
    Plan,
    RemoveGraphAppRole,
    RemovePasswordCredential,
    RemoveRoleAssignment,
    RemoveVaultAccessPolicy,
    RoleAssignment,
    SqlUser,
    Step,
    UpdateAppSettings,
    UpdateConnectionStrings,
    UpdateSlotConfig,
    VaultAccessPolicy,
    VerifyHealth,
)

T = TypeVar("T")


class StepError(Exception):
    """A step that could not be done or undone; the message is one line, secret-free."""


class Unhealthy(StepError):
    """The app did not answer its health check in time after the swap."""


class NeedsConfirmation(StepError):
    """A manual step (T-SQL) the operator has not confirmed yet."""

    def __init__(self, message: str, script: str) -> None:
        super().__init__(message)
        self.script = script


class RightsMismatch(StepError):
    """The identity's rights, read back, lack some the plan granted."""


@dataclass
class IdentityFacts:
    """The identity an app is moving to, once it exists (never a secret)."""

    principal_id: str
    client_id: str
    resource_id: str
    name: str

    def placeholders(self) -> dict[str, str]:
        return {IDENTITY_PRINCIPAL_ID: self.principal_id, IDENTITY_CLIENT_ID: self.client_id,
                IDENTITY_RESOURCE_ID: self.resource_id, IDENTITY_NAME: self.name}


@dataclass
class StepContext:
    """What a handler may use: the plan, the app, Azure, the stash and a few policies."""

    plan: Plan
    app: AppPlan
    cloud: CloudChanges
    stash: Stash
    identity: Callable[[], IdentityFacts]
    still_needed: Callable[[Step], list[str]]  # other apps still needing a shared step
    confirmed_sql: bool = False
    replication_timeout: float = 300.0
    health_timeout: float | None = None
    health_interval: float = 2.0
    sleep: Callable[[float], None] = time.sleep
    owner: str = ""  # whose steps in the journal: the app's name, or "principal/<app id>"
    notes: list[str] = field(default_factory=list)
    rbac_propagation: float = 0.0  # seconds a new role assignment may take to take effect
    rights_granted_at: Callable[[], datetime | None] = lambda: None
    say: Callable[[str], None] = lambda _: None  # a note shown as it happens

    def stash_key(self, step: Step, part: str) -> str:
        return f"{self.plan.name}/{step.id}/{part}"


Before = dict[str, Any]
Result = dict[str, Any]


class Handler(Protocol):
    def snapshot(self, ctx: StepContext, step: Step) -> Before: ...
    def do(self, ctx: StepContext, step: Step, before: Mapping[str, Any]) -> Result: ...
    def verify(self, ctx: StepContext, step: Step, before: Mapping[str, Any]) -> bool: ...
    def undo(self, ctx: StepContext, step: Step, before: Mapping[str, Any],
             result: Mapping[str, Any]) -> Result: ...


def while_replicating(call: Callable[[], T], *, timeout: float,
                      sleep: Callable[[float], None], max_wait: float) -> T:
    """A call naming a new identity, retried while RBAC/Graph do not know it yet (Entra's
    replication delay), for at most `timeout` seconds."""
    for attempt in Retrying(retry=retry_if_exception_type(PrincipalNotReplicated),
                            stop=stop_after_delay(timeout),
                            wait=wait_exponential(multiplier=0.5, max=max_wait),
                            sleep=sleep, reraise=True):
        with attempt:
            return call()
    raise AssertionError("unreachable")  # pragma: no cover


def _replicated(ctx: StepContext, call: Callable[[], T]) -> T:
    return while_replicating(call, timeout=ctx.replication_timeout, sleep=ctx.sleep,
                             max_wait=15)


def _identity_type(system: bool, user_assigned: tuple[str, ...]) -> str:
    if system and user_assigned:
        return "SystemAssigned, UserAssigned"
    if system:
        return "SystemAssigned"
    return "UserAssigned" if user_assigned else "None"


def _has_system(identity_type: str) -> bool:
    return "systemassigned" in identity_type.replace(" ", "").lower()


class _Check:
    """A step that only reads: nothing to snapshot, nothing to undo."""

    def snapshot(self, ctx: StepContext, step: Step) -> Before:
        return {}

    def undo(self, ctx: StepContext, step: Step, before: Mapping[str, Any],
             result: Mapping[str, Any]) -> Result:
        return {}


# --- identity ------------------------------------------------------------------------------


class _EnableSystemIdentity:
    def snapshot(self, ctx: StepContext, step: Step) -> Before:
        assert isinstance(step.params, EnableSystemIdentity)
        site = ctx.cloud.site(step.params.site_id).record
        return {"type": site.identity.type, "user_assigned": list(site.identity.user_assigned),
                "principal_id": site.identity.principal_id}

    def do(self, ctx: StepContext, step: Step, before: Mapping[str, Any]) -> Result:
        assert isinstance(step.params, EnableSystemIdentity)
        site = ctx.cloud.site(step.params.site_id).record
        identity = site.identity
        if not _has_system(identity.type):
            identity = ctx.cloud.set_identity(
                step.params.site_id, _identity_type(True, identity.user_assigned),
                identity.user_assigned)
        if not identity.principal_id:
            raise StepError(f"{ctx.app.name}: the system-assigned identity has no principal id")
        return {"principal_id": identity.principal_id}

    def verify(self, ctx: StepContext, step: Step, before: Mapping[str, Any]) -> bool:
        assert isinstance(step.params, EnableSystemIdentity)
        identity = ctx.cloud.site(step.params.site_id).record.identity
        return _has_system(identity.type) and bool(identity.principal_id)

    def undo(self, ctx: StepContext, step: Step, before: Mapping[str, Any],
             result: Mapping[str, Any]) -> Result:
        assert isinstance(step.params, EnableSystemIdentity)
        if _has_system(str(before.get("type") or "None")):
            return {"kept": "the app had this identity before the plan"}
        current = ctx.cloud.site(step.params.site_id).record.identity
        ctx.cloud.set_identity(step.params.site_id,
                               _identity_type(False, current.user_assigned),
                               current.user_assigned)
        return {}


class _EnsureUserAssignedIdentity:
    def snapshot(self, ctx: StepContext, step: Step) -> Before:
        assert isinstance(step.params, EnsureUserAssignedIdentity)
        return {"existed": ctx.cloud.user_assigned_identity(step.params.resource_id) is not None}

    def do(self, ctx: StepContext, step: Step, before: Mapping[str, Any]) -> Result:
        assert isinstance(step.params, EnsureUserAssignedIdentity)
        found = ctx.cloud.user_assigned_identity(step.params.resource_id)
        if found is None:
            found = ctx.cloud.create_user_assigned_identity(
                step.params.resource_id, step.params.location,
                {"created-by": "msi-migrator", "msi-migrator-plan": ctx.plan.name})
        return {"client_id": found.client_id, "principal_id": found.principal_id}

    def verify(self, ctx: StepContext, step: Step, before: Mapping[str, Any]) -> bool:
        assert isinstance(step.params, EnsureUserAssignedIdentity)
        return ctx.cloud.user_assigned_identity(step.params.resource_id) is not None

    def undo(self, ctx: StepContext, step: Step, before: Mapping[str, Any],
             result: Mapping[str, Any]) -> Result:
        assert isinstance(step.params, EnsureUserAssignedIdentity)
        if before.get("existed"):
            return {"kept": "it existed before the plan"}
        needed = ctx.still_needed(step)
        if needed:
            return {"kept": f"still used by {', '.join(needed)}"}
        found = ctx.cloud.user_assigned_identity(step.params.resource_id)
        if found is None:
            return {"kept": "already deleted"}
        made = str(result.get("principal_id") or "").lower()
        if made and found.principal_id.lower() != made:
            # Deleted and made again by someone else since this plan made it: not ours.
            return {"kept": f"re-created since this plan made it (principal "
                            f"{found.principal_id}, not {made}): not this plan's to delete"}
        ctx.cloud.delete_user_assigned_identity(step.params.resource_id)
        return {}


class _AssignUserAssignedIdentity:
    def snapshot(self, ctx: StepContext, step: Step) -> Before:
        assert isinstance(step.params, AssignUserAssignedIdentity)
        site = ctx.cloud.site(step.params.site_id).record
        return {"type": site.identity.type, "user_assigned": list(site.identity.user_assigned)}

    def do(self, ctx: StepContext, step: Step, before: Mapping[str, Any]) -> Result:
        assert isinstance(step.params, AssignUserAssignedIdentity)
        identity = ctx.cloud.site(step.params.site_id).record.identity
        wanted = step.params.resource_id.lower()
        if wanted not in {u.lower() for u in identity.user_assigned}:
            assigned = (*identity.user_assigned, step.params.resource_id)
            ctx.cloud.set_identity(step.params.site_id,
                                   _identity_type(_has_system(identity.type), assigned), assigned)
        return {}

    def verify(self, ctx: StepContext, step: Step, before: Mapping[str, Any]) -> bool:
        assert isinstance(step.params, AssignUserAssignedIdentity)
        identity = ctx.cloud.site(step.params.site_id).record.identity
        return step.params.resource_id.lower() in {u.lower() for u in identity.user_assigned}

    def undo(self, ctx: StepContext, step: Step, before: Mapping[str, Any],
             result: Mapping[str, Any]) -> Result:
        assert isinstance(step.params, AssignUserAssignedIdentity)
        wanted = step.params.resource_id.lower()
        if wanted in {str(u).lower() for u in before.get("user_assigned") or []}:
            return {"kept": "the app had this identity before the plan"}
        identity = ctx.cloud.site(step.params.site_id).record.identity
        kept = tuple(u for u in identity.user_assigned if u.lower() != wanted)
        ctx.cloud.set_identity(step.params.site_id,
                               _identity_type(_has_system(identity.type), kept), kept)
        return {}


# --- grant ---------------------------------------------------------------------------------


def _role_present(ctx: StepContext, scope: str, role: str, principal_id: str,
                  condition: str | None = None, *, any_condition: bool = False,
                  exact: bool = False) -> bool:
    """Whether the principal holds the role at exactly this scope, allowing at least what
    `condition` allows: an unconditioned assignment does, one under the very same condition
    does, and one under any other condition does not (it may allow less, or other things).
    `exact` wants the very condition (an unconditioned one would allow more);
    `any_condition` asks whether it holds the role there at all."""
    subscription = scope.split("/")[2] if scope.lower().startswith("/subscriptions/") else ""
    return any(a.scope.lower() == scope.lower()
               and a.role_definition_id.rsplit("/", 1)[-1].lower() == role.rsplit("/", 1)[-1]
               .lower()
               and (any_condition or a.condition == condition
                    or (a.condition is None and not exact))
               for a in ctx.cloud.role_assignments_for(principal_id, subscription))


class _RoleAssignment:
    def snapshot(self, ctx: StepContext, step: Step) -> Before:
        assert isinstance(step.params, RoleAssignment)
        p = step.params
        principal = ctx.identity().principal_id
        return {"existed": _role_present(ctx, p.scope, p.role_definition_id, principal,
                                         p.condition),
                "principal_id": principal}

    def do(self, ctx: StepContext, step: Step, before: Mapping[str, Any]) -> Result:
        assert isinstance(step.params, RoleAssignment)
        p = step.params
        principal = ctx.identity().principal_id
        made = _replicated(ctx, lambda: ctx.cloud.create_role_assignment(
            p.scope, p.role_definition_id, principal, p.condition, p.condition_version))
        broader_before = made.condition is None and before.get("existed")
        if made.condition != p.condition and not broader_before:
            # Someone else's assignment of the role under another condition (ARM keeps one
            # per principal, role and scope; rewriting theirs is not this plan's to do), or
            # ours without its condition, which would allow more than the principal had.
            held = (f"under another condition (assignment {made.id})" if made.condition
                    else f"without the condition the plan copies (assignment {made.id})")
            raise StepError(f"{ctx.app.name}: the identity holds {p.role_name} on {p.scope} "
                            f"{held}; reconcile the two by hand, then resume")
        return {"assignment_id": made.id}

    def verify(self, ctx: StepContext, step: Step, before: Mapping[str, Any]) -> bool:
        """After this step's own grant, the very condition; when the identity held the role
        before the plan (or for the stage's rights check, `before` empty), at least it."""
        assert isinstance(step.params, RoleAssignment)
        p = step.params
        made_here = "existed" in before and not before["existed"]
        return _role_present(ctx, p.scope, p.role_definition_id, ctx.identity().principal_id,
                             p.condition, exact=made_here)

    def undo(self, ctx: StepContext, step: Step, before: Mapping[str, Any],
             result: Mapping[str, Any]) -> Result:
        assert isinstance(step.params, RoleAssignment)
        p = step.params
        if before.get("existed"):
            return {"kept": "the identity had this role before the plan"}
        needed = ctx.still_needed(step)
        if needed:
            return {"kept": f"still needed by {', '.join(needed)}"}
        principal = str(before.get("principal_id") or ctx.identity().principal_id)
        ctx.cloud.delete_role_assignment(p.scope, p.role_definition_id, principal)
        return {}


def _policy_of(ctx: StepContext, vault_id: str, object_id: str) -> dict[str, list[str]] | None:
    vault = ctx.cloud.vault(vault_id)
    for policy in vault.access_policies:
        if policy.object_id.lower() == object_id.lower():
            return {"secrets": list(policy.secrets), "keys": list(policy.keys),
                    "certificates": list(policy.certificates)}
    return None


class _VaultAccessPolicy:
    def snapshot(self, ctx: StepContext, step: Step) -> Before:
        assert isinstance(step.params, VaultAccessPolicy)
        principal = ctx.identity().principal_id
        return {"policy": _policy_of(ctx, step.params.vault_id, principal),
                "principal_id": principal}

    def do(self, ctx: StepContext, step: Step, before: Mapping[str, Any]) -> Result:
        assert isinstance(step.params, VaultAccessPolicy)
        p = step.params
        principal = ctx.identity().principal_id
        ctx.cloud.add_access_policy(p.vault_id, principal, p.secrets, p.keys, p.certificates)
        return {}

    def verify(self, ctx: StepContext, step: Step, before: Mapping[str, Any]) -> bool:
        assert isinstance(step.params, VaultAccessPolicy)
        p = step.params
        policy = _policy_of(ctx, p.vault_id, ctx.identity().principal_id)
        if policy is None:
            return False
        return all({x.lower() for x in want} <= {x.lower() for x in policy[kind]}
                   for kind, want in (("secrets", p.secrets), ("keys", p.keys),
                                      ("certificates", p.certificates)))

    def undo(self, ctx: StepContext, step: Step, before: Mapping[str, Any],
             result: Mapping[str, Any]) -> Result:
        assert isinstance(step.params, VaultAccessPolicy)
        needed = ctx.still_needed(step)
        if needed:
            return {"kept": f"still needed by {', '.join(needed)}"}
        principal = str(before.get("principal_id") or ctx.identity().principal_id)
        ctx.cloud.remove_access_policy(step.params.vault_id, principal)
        previous = before.get("policy")
        if isinstance(previous, Mapping):
            ctx.cloud.add_access_policy(step.params.vault_id, principal,
                                        tuple(previous.get("secrets") or ()),
                                        tuple(previous.get("keys") or ()),
                                        tuple(previous.get("certificates") or ()))
        return {}


class _GraphAppRole:
    def _existing(self, ctx: StepContext, step: Step, principal: str) -> str | None:
        assert isinstance(step.params, GraphAppRole)
        p = step.params
        for grant in ctx.cloud.app_role_assignments(principal):
            if grant.resource_id.lower() == p.resource_id.lower() and \
                    grant.app_role_id.lower() == p.app_role_id.lower():
                return grant.id
        return None

    def snapshot(self, ctx: StepContext, step: Step) -> Before:
        principal = ctx.identity().principal_id
        existing = _replicated(ctx, lambda: self._existing(ctx, step, principal))
        return {"existed": existing is not None, "principal_id": principal}

    def do(self, ctx: StepContext, step: Step, before: Mapping[str, Any]) -> Result:
        assert isinstance(step.params, GraphAppRole)
        p = step.params
        principal = ctx.identity().principal_id
        made = _replicated(ctx, lambda: ctx.cloud.assign_app_role(
            principal, p.resource_id, p.app_role_id))
        return {"assignment_id": made}

    def verify(self, ctx: StepContext, step: Step, before: Mapping[str, Any]) -> bool:
        principal = ctx.identity().principal_id
        return _replicated(ctx, lambda: self._existing(ctx, step, principal)) is not None

    def undo(self, ctx: StepContext, step: Step, before: Mapping[str, Any],
             result: Mapping[str, Any]) -> Result:
        if before.get("existed"):
            return {"kept": "the identity had this app role before the plan"}
        needed = ctx.still_needed(step)
        if needed:
            return {"kept": f"still needed by {', '.join(needed)}"}
        principal = str(before.get("principal_id") or ctx.identity().principal_id)
        found = self._existing(ctx, step, principal)
        if found:
            ctx.cloud.remove_app_role_assignment(principal, found)
        return {}


class _SqlUser(_Check):
    """A manual step: the operator runs the T-SQL and confirms (`apply --confirm-sql`)."""

    def do(self, ctx: StepContext, step: Step, before: Mapping[str, Any]) -> Result:
        assert isinstance(step.params, SqlUser)
        script = resolve(step.params.script, ctx.identity().placeholders())
        if not ctx.confirmed_sql:
            raise NeedsConfirmation(
                f"{ctx.app.name}: run this T-SQL in {step.params.database} on "
                f"{step.params.server} as an Entra admin, then apply again with --confirm-sql",
                script)
        return {"confirmed": True}

    def verify(self, ctx: StepContext, step: Step, before: Mapping[str, Any]) -> bool:
        return ctx.confirmed_sql  # nothing to read back without a SQL connection

    def undo(self, ctx: StepContext, step: Step, before: Mapping[str, Any],
             result: Mapping[str, Any]) -> Result:
        assert isinstance(step.params, SqlUser)
        script = resolve(step.params.undo_script, ctx.identity().placeholders())
        ctx.notes.append(f"{ctx.app.name}: to remove the database user, run in "
                         f"{step.params.database} on {step.params.server}: {script.strip()}")
        return {"manual": script}


class _VerifyRights(_Check):
    def do(self, ctx: StepContext, step: Step, before: Mapping[str, Any]) -> Result:
        if not self.verify(ctx, step, before):
            raise RightsMismatch(f"{ctx.app.name}: the identity's rights, read back, lack "
                                 + "; ".join(self.missing(ctx, step)))
        return {}

    def missing(self, ctx: StepContext, step: Step) -> list[str]:
        out = []
        for stage in ctx.app.stages:
            for other in stage.steps:
                handler = HANDLERS[other.params.kind]
                if isinstance(other.params, (RoleAssignment, VaultAccessPolicy, GraphAppRole)) \
                        and not handler.verify(ctx, other, {}):
                    out.append(other.title)
        return out

    def verify(self, ctx: StepContext, step: Step, before: Mapping[str, Any]) -> bool:
        return not self.missing(ctx, step)


# --- swap ----------------------------------------------------------------------------------


class _UpdateAppSettings:
    def snapshot(self, ctx: StepContext, step: Step) -> Before:
        assert isinstance(step.params, UpdateAppSettings)
        settings = ctx.cloud.app_settings(step.params.site_id)
        ctx.stash.put(ctx.stash_key(step, "app_settings"), {"app_settings": settings})
        return {"stash": ctx.stash_key(step, "app_settings"), "names": sorted(settings)}

    def _wanted(self, ctx: StepContext, step: Step, current: Mapping[str, str]
                ) -> dict[str, str]:
        assert isinstance(step.params, UpdateAppSettings)
        return apply_setting_edits(current, step.params.edits, ctx.identity().placeholders())

    def do(self, ctx: StepContext, step: Step, before: Mapping[str, Any]) -> Result:
        assert isinstance(step.params, UpdateAppSettings)
        current = ctx.cloud.app_settings(step.params.site_id)
        wanted = self._wanted(ctx, step, current)
        if wanted != current:
            ctx.cloud.set_app_settings(step.params.site_id, wanted)
        return {"names": sorted(wanted)}

    def verify(self, ctx: StepContext, step: Step, before: Mapping[str, Any]) -> bool:
        assert isinstance(step.params, UpdateAppSettings)
        current = ctx.cloud.app_settings(step.params.site_id)
        return self._wanted(ctx, step, current) == current

    def undo(self, ctx: StepContext, step: Step, before: Mapping[str, Any],
             result: Mapping[str, Any]) -> Result:
        assert isinstance(step.params, UpdateAppSettings)
        restore_secrets_in_stash(ctx)  # a removed credential gets a working replacement
        saved = ctx.stash.get(str(before["stash"]))
        if saved is None:
            raise StepError(f"{ctx.app.name}: the stash has lost the settings of this step")
        ctx.cloud.set_app_settings(step.params.site_id, dict(saved["app_settings"]))
        return {}


class _UpdateConnectionStrings:
    def snapshot(self, ctx: StepContext, step: Step) -> Before:
        assert isinstance(step.params, UpdateConnectionStrings)
        strings = ctx.cloud.connection_strings(step.params.site_id)
        settings = ctx.cloud.app_settings(step.params.site_id)
        touched = {e.name for e in step.params.edits if e.source == "app_setting"}
        ctx.stash.put(ctx.stash_key(step, "connection_strings"), {
            "connection_strings": {k: list(v) for k, v in strings.items()},
            "app_settings": {k: v for k, v in settings.items() if k in touched}})
        return {"stash": ctx.stash_key(step, "connection_strings"), "names": sorted(strings)}

    def _wanted(self, ctx: StepContext, step: Step
                ) -> tuple[dict[str, tuple[str, str]], dict[str, str],
                           dict[str, tuple[str, str]], dict[str, str]]:
        assert isinstance(step.params, UpdateConnectionStrings)
        strings = ctx.cloud.connection_strings(step.params.site_id)
        settings = ctx.cloud.app_settings(step.params.site_id)
        placeholders = ctx.identity().placeholders()
        done = all("managed identity" in _value_of(e.name, e.source, strings, settings).lower()
                   for e in step.params.edits)
        if done:
            return strings, settings, strings, settings
        try:
            new_strings, new_settings = apply_connection_string_edits(
                strings, settings, step.params.edits, placeholders)
        except RewriteError as exc:
            raise StepError(f"{ctx.app.name}: {exc}") from None
        return strings, settings, new_strings, new_settings

    def do(self, ctx: StepContext, step: Step, before: Mapping[str, Any]) -> Result:
        assert isinstance(step.params, UpdateConnectionStrings)
        strings, settings, new_strings, new_settings = self._wanted(ctx, step)
        if new_strings != strings:
            ctx.cloud.set_connection_strings(step.params.site_id, new_strings)
        if new_settings != settings:
            ctx.cloud.set_app_settings(step.params.site_id, new_settings)
        return {}

    def verify(self, ctx: StepContext, step: Step, before: Mapping[str, Any]) -> bool:
        strings, settings, new_strings, new_settings = self._wanted(ctx, step)
        return strings == new_strings and settings == new_settings

    def undo(self, ctx: StepContext, step: Step, before: Mapping[str, Any],
             result: Mapping[str, Any]) -> Result:
        assert isinstance(step.params, UpdateConnectionStrings)
        restore_secrets_in_stash(ctx)
        saved = ctx.stash.get(str(before["stash"]))
        if saved is None:
            raise StepError(f"{ctx.app.name}: the stash has lost the connection strings")
        ctx.cloud.set_connection_strings(
            step.params.site_id,
            {k: (str(v[0]), str(v[1])) for k, v in saved["connection_strings"].items()})
        restored = dict(saved.get("app_settings") or {})
        if restored:
            settings = ctx.cloud.app_settings(step.params.site_id)
            ctx.cloud.set_app_settings(step.params.site_id, {**settings, **restored})
        return {}


def _value_of(name: str, source: str, strings: Mapping[str, tuple[str, str]],
              settings: Mapping[str, str]) -> str:
    if source == "connection_string":
        return strings.get(name, ("", ""))[1]
    return settings.get(name, "")


class _UpdateSlotConfig:
    def snapshot(self, ctx: StepContext, step: Step) -> Before:
        assert isinstance(step.params, UpdateSlotConfig)
        names, strings = ctx.cloud.slot_config_names(step.params.site_id)
        return {"app_settings": sorted(names), "connection_strings": sorted(strings)}

    def do(self, ctx: StepContext, step: Step, before: Mapping[str, Any]) -> Result:
        assert isinstance(step.params, UpdateSlotConfig)
        names, strings = ctx.cloud.slot_config_names(step.params.site_id)
        wanted = names | frozenset(step.params.add_app_setting_names)
        if wanted != names:
            ctx.cloud.set_slot_config_names(step.params.site_id, wanted, strings)
        return {}

    def verify(self, ctx: StepContext, step: Step, before: Mapping[str, Any]) -> bool:
        assert isinstance(step.params, UpdateSlotConfig)
        names, _ = ctx.cloud.slot_config_names(step.params.site_id)
        return frozenset(step.params.add_app_setting_names) <= names

    def undo(self, ctx: StepContext, step: Step, before: Mapping[str, Any],
             result: Mapping[str, Any]) -> Result:
        assert isinstance(step.params, UpdateSlotConfig)
        ctx.cloud.set_slot_config_names(step.params.site_id,
                                        frozenset(before.get("app_settings") or ()),
                                        frozenset(before.get("connection_strings") or ()))
        return {}


class _VerifyHealth(_Check):
    def _state(self, ctx: StepContext, step: Step) -> SiteState:
        assert isinstance(step.params, VerifyHealth)
        return ctx.cloud.site(step.params.site_id)

    def do(self, ctx: StepContext, step: Step, before: Mapping[str, Any]) -> Result:
        assert isinstance(step.params, VerifyHealth)
        timeout = ctx.health_timeout if ctx.health_timeout is not None \
            else step.params.timeout_seconds
        state = self._state(ctx, step)
        deadline = time.monotonic() + timeout
        propagated = self._propagated_by(ctx)
        waited_note = False
        while True:
            probe = ctx.cloud.probe_health(state)
            if probe.ok:
                return {"status": probe.status}
            now = time.monotonic()
            if now >= deadline and propagated is not None and now < propagated:
                if not waited_note:  # not a failure yet: the new rights may not be in force
                    waited_note = True
                    ctx.say(
                        f"{ctx.app.name} was not healthy within {timeout:g} s; waiting up to "
                        f"{propagated - now:.0f} s more, until its new role assignments have "
                        f"had {ctx.rbac_propagation:g} s to take effect (--rbac-propagation)")
            elif now >= deadline:
                waited = f"{timeout:g} s" if not waited_note else (
                    f"{timeout:g} s and the {ctx.rbac_propagation:g} s new role assignments "
                    "may take to take effect")
                raise Unhealthy(f"{ctx.app.name} did not become healthy within {waited} "
                                f"(last answer: {probe.status or 'none'} {probe.detail})")
            ctx.sleep(ctx.health_interval)

    @staticmethod
    def _propagated_by(ctx: StepContext) -> float | None:
        """The monotonic time by which the app's new role assignments have had the
        propagation window, or None if it made none (or the window is over)."""
        granted = ctx.rights_granted_at()
        if granted is None or ctx.rbac_propagation <= 0:
            return None
        left = ctx.rbac_propagation - (datetime.now(timezone.utc) - granted).total_seconds()
        return time.monotonic() + left if left > 0 else None

    def verify(self, ctx: StepContext, step: Step, before: Mapping[str, Any]) -> bool:
        return ctx.cloud.probe_health(self._state(ctx, step)).ok


# --- revoke --------------------------------------------------------------------------------


class _RemovePasswordCredential:
    def snapshot(self, ctx: StepContext, step: Step) -> Before:
        assert isinstance(step.params, RemovePasswordCredential)
        p = step.params
        creds = ctx.cloud.password_credentials(p.application_object_id)
        found = next((c for c in creds if c.key_id == p.key_id), None)
        return {"present": found is not None,
                "display_name": found.display_name if found else None,
                "end": found.end if found else None}

    def do(self, ctx: StepContext, step: Step, before: Mapping[str, Any]) -> Result:
        assert isinstance(step.params, RemovePasswordCredential)
        ctx.cloud.remove_password(step.params.application_object_id, step.params.key_id)
        return {}

    def verify(self, ctx: StepContext, step: Step, before: Mapping[str, Any]) -> bool:
        assert isinstance(step.params, RemovePasswordCredential)
        p = step.params
        return all(c.key_id != p.key_id
                   for c in ctx.cloud.password_credentials(p.application_object_id))

    def undo(self, ctx: StepContext, step: Step, before: Mapping[str, Any],
             result: Mapping[str, Any]) -> Result:
        """The old secret is gone: mint a new one (one per removed credential, shared by every
        app that held it) and put it where the old one was in this app's stashed settings, so
        rolling the swap back gives the app a working secret."""
        assert isinstance(step.params, RemovePasswordCredential)
        replaced = restore_secrets_in_stash(ctx)
        minted = [m for m in replaced if m["key_id"] == step.params.key_id]
        return {"minted": minted} if minted else {"kept": "the credential is still there"}


def _replacement(ctx: StepContext, app_id: str, application_object_id: str,
                 key_id: str) -> tuple[str, str, str | None] | None:
    """A working secret for a removed credential: None while the credential still exists;
    else (new key id, new secret text, hint), minted once per credential and kept in the
    stash, so every app that held the old one gets the same new one, and a rollback that
    crashed after minting reuses it instead of minting again."""
    existing = ctx.cloud.password_credentials(application_object_id)
    if any(c.key_id == key_id for c in existing):
        return None
    marker = f"msi-migrator replacement for {key_id}"
    stash_key = minted_stash_key(ctx.plan.name, app_id, key_id)
    minted = ctx.stash.get(stash_key)
    if minted is not None and any(c.key_id == minted["key_id"] for c in existing):
        new_key, text, hint = str(minted["key_id"]), str(minted["secret"]), minted.get("hint")
    else:
        record, secret = ctx.cloud.add_password(application_object_id, marker)
        new_key, text, hint = record.key_id, secret.reveal(), record.hint
        ctx.stash.put(stash_key, {"key_id": new_key, "hint": hint, "secret": text})
        ctx.notes.append(
            f"{ctx.app.name}: minted a new secret {new_key} (hint {hint}) on the application, "
            f"because credential {key_id} was removed; it replaces the old one when the swap "
            "is rolled back")
    for orphan in existing:  # minted by a rollback that crashed before it stashed it
        if orphan.display_name == marker and orphan.key_id != new_key:
            ctx.cloud.remove_password(application_object_id, orphan.key_id)
    return new_key, text, None if hint is None else str(hint)


def minted_stash_key(plan: str, app_id: str, key_id: str) -> str:
    """Where the secret minted to replace a removed credential is kept, one per credential."""
    return f"{plan}/minted/{app_id.lower()}/{key_id}"


def restore_secrets_in_stash(ctx: StepContext) -> list[dict[str, Any]]:
    """For each credential this app held that has been removed (by its own revoke or another
    app's), put a working replacement secret where the old one sits in the app's stashed
    settings. Idempotent: run by revoke undo and again by every swap undo, before restoring."""
    done: list[dict[str, Any]] = []
    for cred in ctx.app.credentials:
        if not cred.application_object_id:
            continue
        replacement = _replacement(ctx, cred.app_id, cred.application_object_id, cred.key_id)
        if replacement is None:
            continue
        new_key, text, hint = replacement
        names = _swap_secret_in_stash(ctx, cred.app_id, text)
        versions = _write_vault_copies(ctx, cred, new_key, text)
        names += _repin_references_in_stash(ctx, cred, versions)
        done.append({"key_id": cred.key_id, "new_key_id": new_key, "new_hint": hint,
                     "settings": sorted(set(names)),
                     **({"vault_versions": versions} if versions else {})})
    return done


def _write_vault_copies(ctx: StepContext, cred: Credential, new_key: str,
                        text: str) -> dict[str, str]:
    """Write the replacement as a new version of every Key Vault secret that held the removed
    credential's text (the plan lists them), so that an app whose restored setting is a Key
    Vault reference reads a live secret. Returns "vault/secret" -> the version written; the
    versions are kept with the minted secret, so a resumed rollback does not write again."""
    if not cred.vault_secrets:
        return {}
    stash_key = minted_stash_key(ctx.plan.name, cred.app_id, cred.key_id)
    minted = dict(ctx.stash.get(stash_key) or {})
    written = {str(k): str(v) for k, v in (minted.get("vaults") or {}).items()}
    for vault in cred.vault_secrets:
        where = f"{vault.vault}/{vault.secret}"
        if where in written:
            continue
        if not vault.vault_uri:
            raise StepError(
                f"cannot write the replacement for credential {cred.key_id} to secret "
                f"{vault.secret} in Key Vault {vault.vault}: the plan does not know the vault's "
                "address (the scan did not find the vault)")
        written[where] = ctx.cloud.set_vault_secret(
            vault.vault_uri, vault.secret, NewSecret(text),
            tags={"msi-migrator": f"replacement for {cred.key_id}",
                  "credential": new_key})
        minted["vaults"] = written
        ctx.stash.put(stash_key, minted)
        ctx.notes.append(
            f"{ctx.app.name}: wrote the new secret {new_key} as version {written[where]} of "
            f"secret {vault.secret} in Key Vault {vault.vault}, which "
            f"{', '.join(vault.referenced_by)} read through a Key Vault reference")
    return written


def _repin_references_in_stash(ctx: StepContext, cred: Credential,
                               versions: Mapping[str, str]) -> list[str]:
    """A stashed Key Vault reference that pins the old secret's version is repointed at the
    version that holds the replacement: restored as it was, it would read the dead secret."""
    repins: dict[str, tuple[str, str]] = {}  # setting -> (old version, new version)
    for vault in cred.vault_secrets:
        new = versions.get(f"{vault.vault}/{vault.secret}")
        if vault.version is None or new is None or ctx.app.name not in vault.referenced_by:
            continue
        for finding in ctx.app.findings:
            if (finding.client_id or "").lower() == cred.app_id.lower() and (
                    finding.key_vault or "").lower() == f"{vault.vault}/{vault.secret}".lower():
                repins[finding.setting] = (vault.version, new)
    if not repins:
        return []
    changed: list[str] = []
    for key in _swap_stash_keys(ctx):
        stored = ctx.stash.get(key)
        if not stored:
            continue
        data = dict(stored)
        settings = {k: str(v) for k, v in (data.get("app_settings") or {}).items()}
        strings = {k: [str(v[0]), str(v[1])]
                   for k, v in (data.get("connection_strings") or {}).items()}
        for name, (old, new) in repins.items():
            if name in settings:
                settings[name] = repin_key_vault_reference(settings[name], old, new)
                changed.append(name)
            if name in strings:
                strings[name][1] = repin_key_vault_reference(strings[name][1], old, new)
                changed.append(name)
        data["app_settings"] = settings
        if "connection_strings" in data:
            data["connection_strings"] = strings
        ctx.stash.put(key, data)
    return changed


def _swap_stash_keys(ctx: StepContext) -> list[str]:
    """The stash entries that hold this app's settings as they were before its swap."""
    keys = []
    for stage in ctx.app.stages:
        for step in stage.steps:
            if isinstance(step.params, UpdateAppSettings):
                keys.append(ctx.stash_key(step, "app_settings"))
            elif isinstance(step.params, UpdateConnectionStrings):
                keys.append(ctx.stash_key(step, "connection_strings"))
    return keys


def _swap_secret_in_stash(ctx: StepContext, app_id: str, new: str) -> list[str]:
    """Find the old secret text in this app's stashed swap data (by the findings' setting
    names) and replace it with the new one everywhere in that data."""
    olds: set[str] = set()
    keys = _swap_stash_keys(ctx)
    saved = {key: ctx.stash.get(key) for key in keys}
    settings: dict[str, str] = {}
    strings: dict[str, str] = {}
    for key in keys:
        data = saved.get(key) or {}
        settings.update({k: str(v) for k, v in (data.get("app_settings") or {}).items()})
        strings.update({k: str(v[1]) for k, v in (data.get("connection_strings") or {}).items()})
    for finding in ctx.app.findings:
        if (finding.client_id or "").lower() != app_id.lower():
            continue
        value = (strings if finding.source == "connection_string" else settings).get(
            finding.setting)
        if value is None:
            continue
        old = sql_password(value) if finding.rule == "sql-service-principal" else value
        if old and not old.startswith("@Microsoft.KeyVault"):
            olds.add(old)
    replaced: list[str] = []
    for key in keys:
        stored = saved.get(key)
        if not stored:
            continue
        new_data = dict(stored)
        for old in olds:
            app_settings = {k: str(v) for k, v in (new_data.get("app_settings") or {}).items()}
            new_settings = replace_secret(app_settings, old, new)
            replaced += [k for k in app_settings if old in app_settings[k]]
            new_data["app_settings"] = new_settings
            if "connection_strings" in new_data:
                conn = {k: (str(v[0]), str(v[1]))
                        for k, v in (new_data.get("connection_strings") or {}).items()}
                new_conn = {k: [t, v.replace(old, new)] for k, (t, v) in conn.items()}
                replaced += [k for k in conn if old in conn[k][1]]
                new_data["connection_strings"] = new_conn
        ctx.stash.put(key, new_data)
    return sorted(set(replaced))


# --- cleanup -------------------------------------------------------------------------------


class _RemoveRoleAssignment:
    def snapshot(self, ctx: StepContext, step: Step) -> Before:
        assert isinstance(step.params, RemoveRoleAssignment)
        p = step.params
        return {"present": _role_present(ctx, p.scope, p.role_definition_id, p.principal_id,
                                         any_condition=True)}

    def do(self, ctx: StepContext, step: Step, before: Mapping[str, Any]) -> Result:
        assert isinstance(step.params, RemoveRoleAssignment)
        p = step.params
        ctx.cloud.delete_role_assignment(p.scope, p.role_definition_id, p.principal_id)
        return {}

    def verify(self, ctx: StepContext, step: Step, before: Mapping[str, Any]) -> bool:
        assert isinstance(step.params, RemoveRoleAssignment)
        p = step.params
        return not _role_present(ctx, p.scope, p.role_definition_id, p.principal_id,
                                 any_condition=True)

    def undo(self, ctx: StepContext, step: Step, before: Mapping[str, Any],
             result: Mapping[str, Any]) -> Result:
        assert isinstance(step.params, RemoveRoleAssignment)
        p = step.params
        if before.get("present"):
            ctx.cloud.create_role_assignment(p.scope, p.role_definition_id, p.principal_id,
                                             p.condition, p.condition_version)
        return {}


class _RemoveVaultAccessPolicy:
    def snapshot(self, ctx: StepContext, step: Step) -> Before:
        assert isinstance(step.params, RemoveVaultAccessPolicy)
        return {"policy": _policy_of(ctx, step.params.vault_id, step.params.object_id)}

    def do(self, ctx: StepContext, step: Step, before: Mapping[str, Any]) -> Result:
        assert isinstance(step.params, RemoveVaultAccessPolicy)
        ctx.cloud.remove_access_policy(step.params.vault_id, step.params.object_id)
        return {}

    def verify(self, ctx: StepContext, step: Step, before: Mapping[str, Any]) -> bool:
        assert isinstance(step.params, RemoveVaultAccessPolicy)
        return _policy_of(ctx, step.params.vault_id, step.params.object_id) is None

    def undo(self, ctx: StepContext, step: Step, before: Mapping[str, Any],
             result: Mapping[str, Any]) -> Result:
        assert isinstance(step.params, RemoveVaultAccessPolicy)
        previous = before.get("policy")
        if isinstance(previous, Mapping):
            ctx.cloud.add_access_policy(step.params.vault_id, step.params.object_id,
                                        tuple(previous.get("secrets") or ()),
                                        tuple(previous.get("keys") or ()),
                                        tuple(previous.get("certificates") or ()))
        return {}


class _RemoveGraphAppRole:
    def snapshot(self, ctx: StepContext, step: Step) -> Before:
        assert isinstance(step.params, RemoveGraphAppRole)
        p = step.params
        present = any(g.id == p.assignment_id for g in ctx.cloud.app_role_assignments(
            p.principal_id))
        return {"present": present}

    def do(self, ctx: StepContext, step: Step, before: Mapping[str, Any]) -> Result:
        assert isinstance(step.params, RemoveGraphAppRole)
        ctx.cloud.remove_app_role_assignment(step.params.principal_id, step.params.assignment_id)
        return {}

    def verify(self, ctx: StepContext, step: Step, before: Mapping[str, Any]) -> bool:
        assert isinstance(step.params, RemoveGraphAppRole)
        p = step.params
        return all(g.id != p.assignment_id for g in ctx.cloud.app_role_assignments(
            p.principal_id))

    def undo(self, ctx: StepContext, step: Step, before: Mapping[str, Any],
             result: Mapping[str, Any]) -> Result:
        assert isinstance(step.params, RemoveGraphAppRole)
        p = step.params
        if before.get("present"):
            ctx.cloud.assign_app_role(p.principal_id, p.resource_id, p.app_role_id)
        return {}


HANDLERS: dict[str, Handler] = {
    "enable-system-identity": _EnableSystemIdentity(),
    "ensure-user-assigned-identity": _EnsureUserAssignedIdentity(),
    "assign-user-assigned-identity": _AssignUserAssignedIdentity(),
    "role-assignment": _RoleAssignment(),
    "vault-access-policy": _VaultAccessPolicy(),
    "graph-app-role": _GraphAppRole(),
    "sql-user": _SqlUser(),
    "verify-rights": _VerifyRights(),
    "update-app-settings": _UpdateAppSettings(),
    "update-connection-strings": _UpdateConnectionStrings(),
    "update-slot-config": _UpdateSlotConfig(),
    "verify-health": _VerifyHealth(),
    "remove-password-credential": _RemovePasswordCredential(),
    "remove-role-assignment": _RemoveRoleAssignment(),
    "remove-vault-access-policy": _RemoveVaultAccessPolicy(),
    "remove-graph-app-role": _RemoveGraphAppRole(),
}

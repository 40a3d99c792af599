"""Sign-in evidence for the plan: who else signs in with each credential an app holds.

Pure: the scan's summary of the sign-in logs (`inventory.SignInEvidence`) and the plan's apps
in, the plan's `SignInEvidencePlan` and the lines that explain it out. The logs decide the one
step that cannot be undone: a credential that signs in from an address none of its holding apps
calls out from is used by something the scan did not see (a pipeline, a script, a VM), and
removing it would break that. `apply` reads the logs again before each revoke; the plan says
what they showed when it was made.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from migrator.detect.findings import FindingKind
from migrator.inventory import Inventory, PrincipalInventory
from migrator.plan.model import (
    AddressEvidence,
    AppPlan,
    CredentialUse,
    SignInEvidencePlan,
)

# App ids of the resources (cloud/signins.py names them for people).
ARM = "797f4846-ba00-4fd7-ba43-dac1f8f63013"
STORAGE = "e406a681-f3d4-42a8-90b6-c2b029497af1"
KEY_VAULT = "cfa8b339-82a2-471a-a3c9-0fc0be7a4093"
SQL = "022907d3-0f1b-48f7-badc-1ba6abab6d66"


def covered_resources(principal: PrincipalInventory, sql: bool) -> set[str]:
    """App ids of the resources the rights the plan copies reach: role assignments reach ARM
    and the data planes RBAC governs, access policies a vault, app roles their API."""
    out: set[str] = set()
    if principal.role_assignments:
        out |= {ARM, STORAGE, KEY_VAULT}
    if principal.vault_policies:
        out.add(KEY_VAULT)
    out |= {g.resource_app_id.lower() for g in principal.graph_roles if g.resource_app_id}
    if sql:
        out.add(SQL)
    return out


def evidence_plan(inventory: Inventory, apps: Sequence[AppPlan]) -> SignInEvidencePlan | None:
    evidence = inventory.sign_ins
    if evidence is None:
        return None
    principals = {p.app_id.lower(): p for p in inventory.principals}
    holders: dict[tuple[str, str], list[str]] = {}
    hints: dict[tuple[str, str], str | None] = {}
    sql_users: set[str] = set()
    for app in apps:
        for cred in app.credentials:
            key = (cred.app_id.lower(), cred.key_id.lower())
            holders.setdefault(key, []).append(app.name)
            hints[key] = cred.hint
        if any(f.kind == FindingKind.SQL_SERVICE_PRINCIPAL.value for f in app.findings):
            sql_users.update(p.lower() for p in app.principals)
    uses = []
    for found in evidence.credentials:
        key = (found.app_id, found.key_id)
        principal = principals.get(found.app_id)
        if principal is None:
            continue
        record = principal.principal
        hint = hints.get(key) or next(
            (c.hint for c in (record.password_credentials if record else ())
             if c.key_id.lower() == found.key_id), None)
        reach = covered_resources(principal, found.app_id in sql_users)
        uses.append(CredentialUse(
            app_id=found.app_id, principal_name=principal.name, key_id=found.key_id,
            hint=hint, held_by=tuple(sorted(holders.get(key, ()))),
            sign_ins=found.sign_ins, failures=found.failures, last=found.last,
            addresses=tuple(AddressEvidence(ip=a.ip, sign_ins=a.sign_ins, last=a.last,
                                            apps=a.apps) for a in found.addresses),
            resources=found.resources,
            uncovered=tuple(name for rid, name in zip(found.resource_ids, found.resources,
                                                          strict=True)
                            if rid not in reach)))
    return SignInEvidencePlan(source=evidence.source, workspace=evidence.workspace,
                              since=evidence.since, until=evidence.until,
                              unavailable=evidence.unavailable, credentials=tuple(uses))


def outside_line(use: CredentialUse) -> str | None:
    """Why the credential's revoke is held on evidence, or None: it signed in from addresses
    none of the scanned apps calls out from."""
    outside = use.outside
    if not outside:
        return None
    where = ", ".join(f"{a.ip} ({a.sign_ins} sign-in{'s' if a.sign_ins != 1 else ''}, last "
                      f"{a.last})" for a in outside[:5])
    more = f" and {len(outside) - 5} more" if len(outside) > 5 else ""
    to = f" to {', '.join(use.resources[:3])}" if use.resources else ""
    return (f"credential {use.key_id} of {use.principal_name} is used outside the scanned "
            f"apps: from {where}{more}{to}; its revoke goes ahead only once nothing has "
            "signed in with it for the soak period after the swap")


def uncovered_line(use: CredentialUse) -> str | None:
    if not use.uncovered:
        return None
    return (f"{use.principal_name} signs in to {', '.join(use.uncovered)} with credential "
            f"{use.key_id}, which the rights the plan copies do not reach: grant the identity "
            "access there too, or the app loses it after the swap")


def for_app(evidence: SignInEvidencePlan | None, app: AppPlan) -> list[CredentialUse]:
    if evidence is None:
        return []
    return [u for c in app.credentials if (u := evidence.of(c.app_id, c.key_id)) is not None]


def unused(evidence: SignInEvidencePlan | None) -> Iterable[CredentialUse]:
    """Credentials with no sign-in in the window: candidates to remove."""
    if evidence is None or not evidence.read:
        return ()
    return (u for u in evidence.credentials if u.sign_ins == 0)

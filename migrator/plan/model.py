"""The plan as data: what an operator reviews and approves, and all the executor will do.

A plan is a JSON document validated by these pydantic models (the published schema in `plans/`
is generated from them). Every step is data: a kind, its parameters, and its undo. Values that
only exist once an earlier step has run (a new identity's client id) are placeholders such as
`{identity.client_id}`, which the executor resolves. No setting value, and so no secret, is ever
part of a plan: edits say what to remove, what to set (only to a placeholder or a fixed,
non-secret word) and how to rewrite a connection string, never what the value was.

Integrity: each app's section and the whole plan carry a SHA-256 digest of their own canonical
JSON. A hand-edited step without a matching digest is refused on load (`load_plan`).
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

SCHEMA_VERSION: Literal["1"] = "1"

# Placeholders resolved by the executor once the identity exists.
IDENTITY_CLIENT_ID = "{identity.client_id}"
IDENTITY_PRINCIPAL_ID = "{identity.principal_id}"
IDENTITY_RESOURCE_ID = "{identity.resource_id}"
IDENTITY_NAME = "{identity.name}"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Stage(str, enum.Enum):
    IDENTITY = "identity"
    GRANT = "grant"
    SWAP = "swap"
    REVOKE = "revoke"
    CLEANUP = "cleanup"  # a principal's, not an app's: its rights once nothing uses it


STAGES: tuple[Stage, ...] = (Stage.IDENTITY, Stage.GRANT, Stage.SWAP, Stage.REVOKE)
"""An app's stages, in the order they run."""


class AppStatus(str, enum.Enum):
    MIGRATABLE = "migratable"
    BLOCKED = "blocked"
    ADVISORY = "advisory"  # shared keys only: a passwordless candidate, nothing to migrate here


class BlockedCode(str, enum.Enum):
    CODE_NEEDS_SECRET = "code-needs-secret"
    INBOUND_CREDENTIAL = "inbound-credential"
    RIGHTS_UNKNOWN = "rights-unknown"
    CREDENTIAL_UNMATCHED = "credential-unmatched"
    PRINCIPAL_NOT_FOUND = "principal-not-found"
    PRINCIPAL_UNKNOWN = "principal-unknown"


BLOCKED_TITLES: dict[BlockedCode, str] = {
    BlockedCode.CODE_NEEDS_SECRET: "the code reads the secret itself (needs a code change)",
    BlockedCode.INBOUND_CREDENTIAL: "inbound sign-in credential (Easy Auth / Identity.Web)",
    BlockedCode.RIGHTS_UNKNOWN: "the scan could not read all of its principal's rights",
    BlockedCode.CREDENTIAL_UNMATCHED: "the secret matches no single valid credential",
    BlockedCode.PRINCIPAL_NOT_FOUND: "the principal does not exist in the tenant",
    BlockedCode.PRINCIPAL_UNKNOWN: "no client id pairs with the secret",
}


class Blocked(_Model):
    code: BlockedCode
    message: str = Field(description="One line for the operator: what blocks and what to do.")


class Decision(_Model):
    """A choice the planner made, with its reason, so a reviewer can disagree with it."""

    topic: str
    choice: str
    reason: str


class Finding(_Model):
    """A credential the scan found: the setting's name, never its value."""

    setting: str
    source: Literal["app_setting", "connection_string"]
    sticky: bool
    kind: str
    rule: str
    client_id: str | None = None
    hint: str | None = Field(None, description="Entra's hint: the secret's first 3 characters.")
    key_vault: str | None = Field(None, description="vault/secret of a Key Vault reference")
    note: str = ""


class VaultSecret(_Model):
    """A Key Vault secret that holds a credential's text, read by apps' Key Vault references:
    rolling back the credential's removal writes the replacement there."""

    vault: str
    vault_uri: str | None = Field(
        None, description="The vault's data plane; none when the scan did not find the vault.")
    secret: str
    version: str | None = Field(None, description="The version a reference pins, if any.")
    referenced_by: tuple[str, ...] = ()


class Credential(_Model):
    """The principal's password credential an app's secret was matched to."""

    app_id: str
    principal_name: str
    application_object_id: str | None
    key_id: str
    hint: str | None
    display_name: str | None
    expires: str | None
    vault_secrets: tuple[VaultSecret, ...] = Field(
        (), description="Key Vault secrets holding this credential's text (every holder's).")


class IdentityChoice(_Model):
    type: Literal["system-assigned", "user-assigned"]
    identity: str | None = Field(None, description="Key of a plan identity (user-assigned).")
    reason: str


class Undo(_Model):
    action: str
    description: str
    reversible: bool = True


# --- step parameters, one model per kind --------------------------------------------------------


class EnableSystemIdentity(_Model):
    kind: Literal["enable-system-identity"] = "enable-system-identity"
    site_id: str
    current_type: str = Field(description="The identity type the scan saw; kept and extended.")


class EnsureUserAssignedIdentity(_Model):
    kind: Literal["ensure-user-assigned-identity"] = "ensure-user-assigned-identity"
    identity: str
    resource_id: str
    location: str


class AssignUserAssignedIdentity(_Model):
    kind: Literal["assign-user-assigned-identity"] = "assign-user-assigned-identity"
    site_id: str
    identity: str
    resource_id: str
    current_type: str
    key_vault_reference_identity: str | None = Field(
        None, description="Kept as it is: Key Vault references resolve as before.")


class _Conditioned(_Model):
    """A role assignment's optional ABAC condition. Left out of the plan file when there is
    none, so that plans written before conditions were copied keep their digests."""

    condition: str | None = None
    condition_version: str | None = None

    @model_serializer(mode="wrap")
    def _without_no_condition(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if self.condition is None:
            data.pop("condition", None)
            data.pop("condition_version", None)
        return data


class RoleAssignment(_Conditioned):
    kind: Literal["role-assignment"] = "role-assignment"
    scope: str
    role_definition_id: str
    role_name: str
    principal_id: str = IDENTITY_PRINCIPAL_ID
    principal_type: Literal["ServicePrincipal"] = "ServicePrincipal"
    copied_from: str = Field(description="App id of the principal that holds it now.")
    condition: str | None = Field(
        None, description="The ABAC condition of the principal's assignment, verbatim: without "
                          "it the copy would grant more than the principal had.")
    condition_version: str | None = None


class VaultAccessPolicy(_Model):
    kind: Literal["vault-access-policy"] = "vault-access-policy"
    vault_id: str
    vault_name: str
    object_id: str = IDENTITY_PRINCIPAL_ID
    secrets: tuple[str, ...]
    keys: tuple[str, ...]
    certificates: tuple[str, ...]
    copied_from: str


class GraphAppRole(_Model):
    kind: Literal["graph-app-role"] = "graph-app-role"
    resource_id: str
    resource_name: str
    app_role_id: str
    app_role_value: str | None
    principal_id: str = IDENTITY_PRINCIPAL_ID
    copied_from: str


class SqlUser(_Model):
    """A database user for the identity: T-SQL an operator runs and confirms."""

    kind: Literal["sql-user"] = "sql-user"
    server: str
    database: str
    user_name: str = IDENTITY_NAME
    copied_from_user: str
    script: str
    undo_script: str
    requires_confirmation: Literal[True] = True


class VerifyRights(_Model):
    kind: Literal["verify-rights"] = "verify-rights"
    principal_id: str = IDENTITY_PRINCIPAL_ID
    role_assignments: int
    vault_policies: int
    graph_app_roles: int


class SettingEdit(_Model):
    name: str
    action: Literal["remove", "set"]
    value: str | None = Field(
        None, description="For `set`: a placeholder or a fixed word, never a secret.")
    sticky: bool = False


class UpdateAppSettings(_Model):
    kind: Literal["update-app-settings"] = "update-app-settings"
    site_id: str
    edits: tuple[SettingEdit, ...]


class ConnectionStringEdit(_Model):
    name: str
    source: Literal["app_setting", "connection_string"]
    rewrite: Literal["sql-managed-identity"]
    client_id: str | None = Field(
        None, description="User Id for a user-assigned identity; none for system-assigned.")


class UpdateConnectionStrings(_Model):
    kind: Literal["update-connection-strings"] = "update-connection-strings"
    site_id: str
    edits: tuple[ConnectionStringEdit, ...]


class UpdateSlotConfig(_Model):
    kind: Literal["update-slot-config"] = "update-slot-config"
    site_id: str
    add_app_setting_names: tuple[str, ...]


class VerifyHealth(_Model):
    kind: Literal["verify-health"] = "verify-health"
    site_id: str
    timeout_seconds: int = 300


def verify_health_title(app: str, timeout_seconds: float) -> str:
    """The health check's title, for the plan and for a run that changes its timeout."""
    return (f"Wait for {app} to answer its health check after the restart (up to "
            f"{timeout_seconds:g} s); restore the settings if it does not")


class RemovePasswordCredential(_Model):
    kind: Literal["remove-password-credential"] = "remove-password-credential"
    app_id: str
    application_object_id: str
    key_id: str
    hint: str | None
    also_used_by: tuple[str, ...] = Field(
        (), description="Other apps holding the same credential: each must be swapped first.")


class RemoveRoleAssignment(_Conditioned):
    kind: Literal["remove-role-assignment"] = "remove-role-assignment"
    principal_id: str
    scope: str
    role_definition_id: str
    role_name: str
    condition: str | None = Field(None, description="Restored with the assignment on undo.")
    condition_version: str | None = None


class RemoveVaultAccessPolicy(_Model):
    kind: Literal["remove-vault-access-policy"] = "remove-vault-access-policy"
    vault_id: str
    vault_name: str
    object_id: str
    secrets: tuple[str, ...]
    keys: tuple[str, ...]
    certificates: tuple[str, ...]


class RemoveGraphAppRole(_Model):
    kind: Literal["remove-graph-app-role"] = "remove-graph-app-role"
    principal_id: str
    assignment_id: str
    resource_id: str
    resource_name: str
    app_role_id: str
    app_role_value: str | None


StepParams = Annotated[
    EnableSystemIdentity | EnsureUserAssignedIdentity | AssignUserAssignedIdentity
    | RoleAssignment | VaultAccessPolicy | GraphAppRole | SqlUser | VerifyRights
    | UpdateAppSettings | UpdateConnectionStrings | UpdateSlotConfig | VerifyHealth
    | RemovePasswordCredential | RemoveRoleAssignment | RemoveVaultAccessPolicy
    | RemoveGraphAppRole,
    Field(discriminator="kind"),
]


class Step(_Model):
    id: str = Field(description="Stable within the plan: the journal keys on it.")
    title: str
    params: StepParams
    undo: Undo
    shared_with: tuple[str, ...] = Field(
        (), description="Other apps whose plan has this same step (a shared identity's "
                        "rights): undo leaves it while any of them still needs it.")


class StagePlan(_Model):
    stage: Stage
    steps: tuple[Step, ...] = ()
    held: tuple[str, ...] = Field(
        (), description="Why the stage cannot run yet, beyond its own order (empty: it can).")


class AppPlan(_Model):
    name: str = Field(description="site or site/slot")
    site_id: str
    subscription_id: str
    resource_group: str
    kind: str
    status: AppStatus
    blocked: tuple[Blocked, ...] = ()
    findings: tuple[Finding, ...]
    principals: tuple[str, ...] = Field(description="App ids of the principals it signs in as.")
    credentials: tuple[Credential, ...] = ()
    identity: IdentityChoice | None = None
    decisions: tuple[Decision, ...] = ()
    stages: tuple[StagePlan, ...] = ()
    settings_fingerprint: str
    digest: str = ""


class IdentityPlan(_Model):
    """A user-assigned identity the plan creates for the apps that share a principal."""

    key: str
    name: str
    subscription_id: str
    resource_group: str
    location: str
    resource_id: str
    used_by: tuple[str, ...]
    principals: tuple[str, ...]
    reason: str


class PrincipalPlan(_Model):
    """A principal the plan moves apps away from, and what happens to it at the end."""

    app_id: str
    name: str
    object_id: str | None
    used_by: tuple[str, ...]
    credentials_removed: tuple[str, ...]
    other_valid_credentials: tuple[str, ...]
    cleanup: StagePlan = Field(description="Removing the principal's now-unused rights: "
                                           "optional, only after every user is revoked.")


class Gap(_Model):
    scope: str
    operation: str
    message: str
    accepted: bool = False


class Summary(_Model):
    apps_found: int
    migratable: int
    blocked: int
    advisory: int
    blocked_by_reason: dict[str, int]
    secrets_to_remove: int
    rights_to_grant: int
    shared_principals: int
    identities_to_create: int
    irreversible_steps: int


class MissingRight(_Model):
    """A permission a step needs that the operator who made the plan lacks."""

    app: str
    stage: Stage
    step: str = Field(description="The step's title.")
    needs: str = Field(description="An ARM action on a scope, or Microsoft Graph roles.")

    @property
    def line(self) -> str:
        return f"{self.app} {self.stage.value}: {self.step}: needs {self.needs}"


class OperatorRights(_Model):
    """The operator's own rights, checked against the plan's steps when it was made: `apply`
    checks again, and refuses, before it changes anything."""

    checked_as: str | None = Field(None, description="Object id of the operator checked.")
    missing: tuple[MissingRight, ...] = ()
    unchecked: tuple[str, ...] = Field(
        (), description="What could not be checked up front, and why.")


class AddressEvidence(_Model):
    ip: str
    sign_ins: int
    last: str
    apps: tuple[str, ...] = Field(
        description="Apps that call out from this address (their outbound addresses); empty: "
                    "none of the scanned apps, so someone else holds the secret.")


class CredentialUse(_Model):
    """What the sign-in logs say of one credential over the lookback window."""

    app_id: str
    principal_name: str
    key_id: str
    hint: str | None
    held_by: tuple[str, ...] = Field(description="Apps of the plan that hold this credential.")
    sign_ins: int
    failures: int
    last: str | None = Field(description="Newest sign-in; none in the window when empty.")
    addresses: tuple[AddressEvidence, ...] = ()
    resources: tuple[str, ...] = Field((), description="What it signed in to, most used first.")
    uncovered: tuple[str, ...] = Field(
        (), description="Resources it signed in to that the rights the plan copies do not "
                        "cover: the identity will not reach them.")

    @property
    def outside(self) -> tuple[AddressEvidence, ...]:
        return tuple(a for a in self.addresses if not a.apps)


class SignInEvidencePlan(_Model):
    """The service-principal sign-in logs the plan was made with, or why there were none."""

    source: Literal["graph", "log-analytics", "none"] = Field(
        description="Where the evidence came from (apply reads it there again); `none`: "
                    "revokes wait for the soak only.")
    workspace: str | None = Field(
        None, description="The Log Analytics workspace id, for `log-analytics`.")
    since: str
    until: str
    unavailable: str | None = Field(None, description="Why the logs could not be read.")
    credentials: tuple[CredentialUse, ...] = ()

    def of(self, app_id: str, key_id: str) -> CredentialUse | None:
        return next((c for c in self.credentials if c.app_id == app_id.lower()
                     and c.key_id == key_id.lower()), None)

    @property
    def read(self) -> bool:
        """Whether the logs were read (else the soak timer alone decides)."""
        return self.source != "none"


class Plan(_Model):
    schema_version: Literal["1"] = SCHEMA_VERSION
    name: str
    created_at: str
    tool_version: str
    tenant_id: str | None
    scan_complete: bool
    gaps: tuple[Gap, ...] = ()
    settings_salt: str = Field(description="Salt of every app's settings fingerprint (hex).")
    summary: Summary
    identities: tuple[IdentityPlan, ...] = ()
    principals: tuple[PrincipalPlan, ...] = ()
    apps: tuple[AppPlan, ...] = ()
    operator_rights: OperatorRights | None = Field(
        None, description="Permissions the operator lacks for the plan's steps; none when "
                          "not checked.")
    sign_ins: SignInEvidencePlan | None = Field(
        None, description="Sign-in evidence for the revokes; none when not read.")
    digest: str = ""

    @model_serializer(mode="wrap")
    def _without_unchecked_rights(self, handler: SerializerFunctionWrapHandler
                                  ) -> dict[str, Any]:
        """Left out when not checked (or not read), so that plans made before the check keep
        their digests."""
        data: dict[str, Any] = handler(self)
        if self.operator_rights is None:
            data.pop("operator_rights", None)
        if self.sign_ins is None:
            data.pop("sign_ins", None)
        return data

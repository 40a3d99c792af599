"""Fixed facts of the simulated cloud that both the estate file and the live tenant use: how
an object the estate names gets its id (uuid5 of the name, so the same file gives the same
tenant), what a generated client secret looks like, and Microsoft Graph's app-role catalog."""

from __future__ import annotations

import functools
import secrets
import string
import uuid

NAMESPACE = uuid.UUID("6d1c7a8e-3f5b-5a43-9c0e-6b2a1f0d9e71")
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"

# Microsoft Graph application permissions (app roles) an app commonly holds, with the ids
# Microsoft publishes (microsoftgraph/microsoft-graph-docs-contrib,
# concepts/includes/permissions-ids.md, "Application" rows; each id also checked against other
# public uses of it under the same name). User.ReadBasic.All is left out: that table gives only
# its delegated id.
GRAPH_APP_ROLES: dict[str, str] = {
    "AdministrativeUnit.Read.All": "134fd756-38ce-4afd-ba33-e9623dbe66c2",
    "Application.Read.All": "9a5d68dd-52b0-4cc2-bd40-abcf44ac3a30",
    "Application.ReadWrite.All": "1bfefb4e-e0b5-418b-a88f-73c46d2cc8e9",
    "Application.ReadWrite.OwnedBy": "18a4783c-866b-4cc7-a460-3d5e5662c884",
    "AppRoleAssignment.ReadWrite.All": "06b708a9-e830-4db3-a914-8e69da51d44f",
    "AuditLog.Read.All": "b0afded3-3588-46d8-8b3d-9842eff778da",
    "Calendars.Read": "798ee544-9d2d-430c-a058-570e29e34338",
    "Calendars.ReadWrite": "ef54d2bf-783f-4e0f-bca1-3210c0444d99",
    "Channel.ReadBasic.All": "59a6b24b-4225-4393-8165-ebaec5f55d7a",
    "ChannelMessage.Read.All": "7b2449af-6ccd-4f4d-9f78-e550c193f0d1",
    "Chat.Read.All": "6b7d71aa-70aa-4810-a8d9-5d9fb2830017",
    "Contacts.Read": "089fe4d0-434a-44c5-8827-41ba8a0b17f5",
    "Device.Read.All": "7438b122-aefc-4978-80ed-43db9fcc7715",
    "DeviceManagementManagedDevices.Read.All": "2f51be20-0bb4-4fed-bf7b-db946066c75e",
    "Directory.Read.All": "7ab1d382-f21e-4acd-a863-ba3e13f7da61",
    "Directory.ReadWrite.All": "19dbc75e-c2e2-444c-a770-ec69d8559fc7",
    "Domain.Read.All": "dbb9058a-0e50-45d7-ae91-66909b5d4664",
    "Files.Read.All": "01d4889c-1287-42c6-ac1f-5d1e02578ef6",
    "Files.ReadWrite.All": "75359482-378d-4052-8f01-80520e7db3cd",
    "Group.Create": "bf7b1a76-6e77-406b-b258-bf5c7720e98f",
    "Group.Read.All": "5b567255-7703-4780-807c-7be8301ae99b",
    "Group.ReadWrite.All": "62a82d76-70ea-41e2-9197-370581804d09",
    "GroupMember.Read.All": "98830695-27a2-44f7-8c18-0c3ebc9698f6",
    "GroupMember.ReadWrite.All": "dbaae8cf-10b5-4b86-a4a1-f871c94c6695",
    "IdentityRiskyUser.Read.All": "dc5007c0-2d7d-4c42-879c-2dab87571379",
    "Mail.Read": "810c84a8-4a9e-49e6-bf7d-12d183f40d01",
    "Mail.ReadBasic.All": "693c5e45-0940-467d-9b8a-1022fb9d42ef",
    "Mail.ReadWrite": "e2a3a72e-5f79-4c64-b1b1-878b674786c9",
    "Mail.Send": "b633e1c5-b582-4048-a93e-9f11b44c7e96",
    "MailboxSettings.Read": "40f97065-369a-49f4-947c-6a255697ae91",
    "Notes.Read.All": "3aeca27b-ee3a-4c2b-8ded-80376e2134a4",
    "OnlineMeetings.Read.All": "c1684f21-1984-47fa-9d61-2dc8c296bb70",
    "Organization.Read.All": "498476ce-e0fe-48b0-b801-37ba7e2685c6",
    "People.Read.All": "b528084d-ad10-4598-8b93-929746b4d7d6",
    "Policy.Read.All": "246dd0d5-5bd0-4def-940b-0421030a5b68",
    "Reports.Read.All": "230c1aed-a721-4c5d-9cb4-a90514e508ef",
    "RoleManagement.Read.Directory": "483bed4a-2ad3-4361-a73b-c83ccdbdc53c",
    "SecurityEvents.Read.All": "bf394140-e372-4bf9-a898-299cfc7564e5",
    "ServiceHealth.Read.All": "79c261e0-fe76-4144-aad5-bdc68fbe4037",
    "Sites.FullControl.All": "a82116e5-55eb-4c41-a434-62fe8a61c773",
    "Sites.Manage.All": "0c0bf378-bf22-4481-8f81-9e89a9b4960a",
    "Sites.Read.All": "332a536c-c7ef-4017-ab91-336970924f0d",
    "Sites.ReadWrite.All": "9492366f-7969-46a4-8d15-ed1a20078fff",
    "Sites.Selected": "883ea226-0bf2-4a8f-9f9d-92c9162a727d",
    "Tasks.Read.All": "f10e1f91-74ed-437f-a6fd-d6ae88e26c1f",
    "Team.ReadBasic.All": "2280dda6-0bfd-44ee-a2f4-cb867cfc4c1e",
    "TeamMember.Read.All": "660b7406-55f1-41ca-a0ed-0b035e182f3e",
    "User.Export.All": "405a51b5-8d8d-430b-9842-8be4b0e9f324",
    "User.Invite.All": "09850681-111b-4a89-9bed-3f2cae46d706",
    "User.Read.All": "df021288-bdef-4463-88db-98f22de89214",
    "User.ReadWrite.All": "741f803b-c850-494e-b5df-cde7c675a1ca",
    "UserAuthenticationMethod.Read.All": "38d9df27-64da-44fd-b7c5-a6fbac20248f",
}
GRAPH_ROLE_NAMES = {v: k for k, v in GRAPH_APP_ROLES.items()}


@functools.lru_cache(maxsize=65536)
def derive_id(kind: str, name: str) -> str:
    """The deterministic id of an object the estate names but gives no id."""
    return str(uuid.uuid5(NAMESPACE, f"{kind}:{name}"))


_LETTERS = string.ascii_letters
_ALPHABET = string.ascii_letters + string.digits + "_~.-"


def generate_client_secret() -> str:
    """A secret in Entra's current format: 3 letters, a digit, 'Q~', then 34 characters."""
    raw = secrets.token_bytes(38)
    return ("".join(_LETTERS[b % len(_LETTERS)] for b in raw[:3]) + str(raw[3] % 10) + "Q~"
            + "".join(_ALPHABET[b % len(_ALPHABET)] for b in raw[4:]))


def app_role_id(api: str, value: str) -> str:
    """The id of an app role an estate API (a principal with `app_roles`) exposes."""
    return derive_id("app-role", f"{api}/{value}")

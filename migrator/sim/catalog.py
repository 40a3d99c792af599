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

# Microsoft Graph application permissions (app roles) the simulator knows, with Graph's ids.
GRAPH_APP_ROLES: dict[str, str] = {
    "Application.Read.All": "9a5d68dd-52b0-4cc2-bd40-abcf44ac3a30",
    "Application.ReadWrite.All": "1bfefb4e-e0b5-418b-a88f-73c46d2cc8e9",
    "Application.ReadWrite.OwnedBy": "18a4783c-866b-4cc7-a460-3d5e5662c884",
    "AppRoleAssignment.ReadWrite.All": "06b708a9-e830-4db3-a914-8e69da51d44f",
    "Directory.Read.All": "7ab1d382-f21e-4acd-a863-ba3e13f7da61",
    "Directory.ReadWrite.All": "19dbc75e-c2e2-444c-a770-ec69d8559fc7",
    "User.Read.All": "df021288-bdef-4463-88db-98f22de89214",
    "Group.Read.All": "5b567255-7703-4780-807c-7be8301ae99b",
    "Mail.Send": "b633e1c5-b582-4048-a93e-9f11b44c7e96",
    "Sites.Read.All": "332a536c-c7ef-4017-ab91-336970924f0d",
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

"""Setting values as the detector reads them: shapes that mark a credential, or an identifier.

Each function looks at a value and answers with a shape: an Entra client secret, a GUID, a
tenant, a Key Vault reference, a connection string's keywords. The rules decide what a shape
means where it sits. Nothing here keeps, logs or returns a secret except to the caller that
hashes it.
"""

from __future__ import annotations

import base64
import binascii
import re
from urllib.parse import urlsplit

from migrator.detect.findings import KeyVaultRef

# Entra client secrets issued since 2021 (gitleaks `azure-ad-client-secret`, AZURE-FACTS.md).
ENTRA_CLIENT_SECRET = re.compile(r"[a-zA-Z0-9_~.-]{3}\dQ~[a-zA-Z0-9_~.-]{31,34}")
_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
_DOMAIN = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}", re.IGNORECASE)
# App Service references resolved by the platform: @Microsoft.KeyVault(...),
# @Microsoft.AppConfiguration(...). The setting holds where the value is, not the value.
_PLATFORM_REFERENCE = re.compile(r"@Microsoft\.(?P<service>[A-Za-z]+)\((?P<body>.*)\)",
                                 re.IGNORECASE | re.DOTALL)
# What App Service takes for a reference however it continues: a value that starts like one is
# never a secret the app can use, because the platform hands it over as written when it cannot
# resolve it (Key Vault status InvalidSyntax, AZURE-FACTS.md).
_PLATFORM_REFERENCE_START = re.compile(r"@Microsoft\.[A-Za-z]+\(", re.IGNORECASE)
_SECRET_URI = re.compile(
    r"https://(?P<vault>[a-z0-9-]+)\.vault\.[a-z0-9.-]+(?::\d+)?"
    r"/secrets/(?P<secret>[a-z0-9-]+)(?:/(?P<version>[a-z0-9]*))?/?",
    re.IGNORECASE)
_QUOTES = {'"': '"', "'": "'", "{": "}"}


def is_entra_client_secret(value: str) -> bool:
    """True when the whole value has the format of an Entra client secret."""
    return ENTRA_CLIENT_SECRET.fullmatch(value) is not None


def guid(value: str) -> str | None:
    """The value as a lower-case GUID, or None: Entra app and tenant ids are GUIDs."""
    text = value.strip()
    return text.lower() if _GUID.fullmatch(text) else None


def tenant(value: str) -> str | None:
    """The value as a tenant: a GUID or a domain (contoso.onmicrosoft.com), lower-cased."""
    text = value.strip()
    if _GUID.fullmatch(text) or _DOMAIN.fullmatch(text):
        return text.lower()
    return None


def tenant_from_authority(url: str) -> str | None:
    """The tenant named in a sign-in URL (`https://login.microsoftonline.com/<tenant>/v2.0`).

    `common`, `organizations` and an `Instance` without a path name no tenant.
    """
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    if parts.scheme.lower() not in ("https", "http") or not parts.netloc:
        return None
    return next((t for segment in parts.path.split("/") if (t := tenant(segment))), None)


def is_platform_reference(value: str) -> bool:
    """True for `@Microsoft.<Service>(...)`: App Service resolves it, the setting holds none."""
    return _PLATFORM_REFERENCE.fullmatch(value.strip()) is not None


def platform_service(value: str) -> str | None:
    """The service (lower case) a well-formed `@Microsoft.<Service>(...)` names, else None."""
    reference = _PLATFORM_REFERENCE.fullmatch(value.strip())
    return reference["service"].lower() if reference else None


def looks_like_platform_reference(value: str) -> bool:
    """True for a value that starts `@Microsoft.<Service>(`, well-formed or not."""
    return _PLATFORM_REFERENCE_START.match(value.strip()) is not None


def key_vault_reference(value: str) -> KeyVaultRef | None:
    """Where a Key Vault reference points, in either of its two documented spellings."""
    reference = _PLATFORM_REFERENCE.fullmatch(value.strip())
    if reference is None or reference["service"].lower() != "keyvault":
        return None
    fields = connection_string_fields(reference["body"])
    if "secreturi" in fields:
        uri = _SECRET_URI.fullmatch(fields["secreturi"])
        if uri is None:
            return None
        return KeyVaultRef(vault=uri["vault"], secret=uri["secret"],
                           version=uri["version"] or None)
    vault, secret = fields.get("vaultname", ""), fields.get("secretname", "")
    if not vault or not secret:
        return None
    return KeyVaultRef(vault=vault, secret=secret, version=fields.get("secretversion") or None)


def connection_string_fields(text: str) -> dict[str, str]:
    """A connection string's keywords (lower case, spaces removed) and their values.

    Values may be quoted with `"`, `'` (a doubled quote escapes it) or ODBC braces `{...}`
    (`}}` escapes), which lets a password hold `;`. Segments without `=` (a JDBC URL's
    `jdbc:sqlserver://host`) are skipped. As in ADO.NET, a repeated keyword's last value wins.
    """
    fields: dict[str, str] = {}
    position, end = 0, len(text)
    while position < end:
        while position < end and text[position] in "; \t\r\n":
            position += 1
        equals, semicolon = text.find("=", position), text.find(";", position)
        if equals == -1 or (semicolon != -1 and semicolon < equals):
            position = end if semicolon == -1 else semicolon + 1
            continue
        keyword = "".join(text[position:equals].split()).lower()
        position = equals + 1
        while position < end and text[position] in " \t":
            position += 1
        if position < end and text[position] in _QUOTES:
            value, position = _quoted(text, position)
            semicolon = text.find(";", position)
            position = end if semicolon == -1 else semicolon + 1
        else:
            semicolon = text.find(";", position)
            stop = end if semicolon == -1 else semicolon
            value, position = text[position:stop].strip(), stop + 1
        if keyword:
            fields[keyword] = value
    return fields


def _quoted(text: str, start: int) -> tuple[str, int]:
    """A quoted value starting at `start`; returns it and the position after the closing mark."""
    close = _QUOTES[text[start]]
    kept: list[str] = []
    position = start + 1
    while position < len(text):
        if text[position] == close:
            if text[position + 1:position + 2] == close:
                kept.append(close)
                position += 2
                continue
            return "".join(kept), position + 1
        kept.append(text[position])
        position += 1
    return "".join(kept), position


def is_base64_key(value: str, size: int = 64) -> bool:
    """True for base64 of exactly `size` bytes: storage account and Cosmos DB keys."""
    try:
        return len(base64.b64decode(value.strip(), validate=True)) == size
    except (binascii.Error, ValueError):
        return False

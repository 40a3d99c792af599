"""Pure rewrites the swap applies to the values it may not show: settings edits and SQL
connection strings. The executor hands them the current values (read from Azure, secrets
included) and writes back what they return; nothing here logs or keeps a value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from migrator.plan.model import ConnectionStringEdit, SettingEdit

MANAGED_IDENTITY_AUTH = "Active Directory Managed Identity"
_PASSWORD_KEYS = frozenset({"password", "pwd", "aadsecureprincipalsecret"})
_USER_KEYS = frozenset({"userid", "uid", "user", "username", "aadsecureprincipalid"})


class RewriteError(Exception):
    """A value the plan's rewrite cannot apply to (its message names the setting only)."""


def _segments(text: str) -> list[tuple[str, str]]:
    """(keyword as written, raw value) pairs, in order. Quoted values keep their quotes so
    that an unchanged segment is written back exactly as it was."""
    out: list[tuple[str, str]] = []
    position, end = 0, len(text)
    while position < end:
        while position < end and text[position] in "; \t\r\n":
            position += 1
        if position >= end:
            break
        equals = text.find("=", position)
        semicolon = text.find(";", position)
        if equals == -1 or (semicolon != -1 and semicolon < equals):
            stop = end if semicolon == -1 else semicolon
            out.append(("", text[position:stop]))
            position = stop + 1
            continue
        keyword = text[position:equals].strip()
        position = equals + 1
        start = position
        while position < end and text[position] in " \t":
            position += 1
        if position < end and text[position] in "\"'{":
            close = {"\"": "\"", "'": "'", "{": "}"}[text[position]]
            position += 1
            while position < end:
                if text[position] == close:
                    if text[position + 1:position + 2] == close:
                        position += 2
                        continue
                    position += 1
                    break
                position += 1
            semicolon = text.find(";", position)
            stop = end if semicolon == -1 else semicolon
        else:
            semicolon = text.find(";", position)
            stop = end if semicolon == -1 else semicolon
        out.append((keyword, text[start:stop].strip()))
        position = stop + 1
    return out


def _norm(keyword: str) -> str:
    return "".join(keyword.split()).lower()


def sql_to_managed_identity(value: str, client_id: str | None) -> str:
    """`Authentication=Active Directory Managed Identity`, no password, and `User Id` = the
    user-assigned identity's client id (none for a system-assigned identity). Every other
    keyword (server, database, timeouts, encryption) is kept as it was, in order."""
    segments = _segments(value)
    if not any(_norm(k) == "authentication" for k, _ in segments):
        raise RewriteError("no Authentication keyword: not a service-principal connection")
    out: list[str] = []
    user_written = False
    for keyword, raw in segments:
        key = _norm(keyword)
        if not keyword:
            out.append(raw)
        elif key in _PASSWORD_KEYS:
            continue
        elif key == "authentication":
            out.append(f"{keyword}={MANAGED_IDENTITY_AUTH}")
        elif key in _USER_KEYS:
            if client_id and not user_written:
                out.append(f"{keyword}={client_id}")
                user_written = True
        else:
            out.append(f"{keyword}={raw}")
    if client_id and not user_written:
        out.append(f"User Id={client_id}")
    return ";".join(out) + ";"


def apply_setting_edits(settings: Mapping[str, str], edits: tuple[SettingEdit, ...],
                        placeholders: Mapping[str, str]) -> dict[str, str]:
    """The settings after the plan's edits; names match case-insensitively, as App Service
    treats them."""
    result = dict(settings)
    by_lower = {k.lower(): k for k in result}
    for edit in edits:
        existing = by_lower.get(edit.name.lower())
        if edit.action == "remove":
            if existing is not None:
                del result[existing]
                del by_lower[edit.name.lower()]
            continue
        value = resolve(edit.value or "", placeholders)
        if existing is not None and existing != edit.name:
            del result[existing]
        result[edit.name] = value
        by_lower[edit.name.lower()] = edit.name
    return result


def apply_connection_string_edits(strings: Mapping[str, tuple[str, str]],
                                  settings: Mapping[str, str],
                                  edits: tuple[ConnectionStringEdit, ...],
                                  placeholders: Mapping[str, str]
                                  ) -> tuple[dict[str, tuple[str, str]], dict[str, str]]:
    """Connection strings and app settings after the SQL rewrites (a SQL connection string may
    sit in either)."""
    new_strings, new_settings = dict(strings), dict(settings)
    for edit in edits:
        client_id = resolve(edit.client_id, placeholders) if edit.client_id else None
        if edit.source == "connection_string":
            if edit.name not in new_strings:
                raise RewriteError(f"connection string {edit.name} is gone")
            kind, value = new_strings[edit.name]
            new_strings[edit.name] = (kind, sql_to_managed_identity(value, client_id))
        else:
            if edit.name not in new_settings:
                raise RewriteError(f"app setting {edit.name} is gone")
            new_settings[edit.name] = sql_to_managed_identity(new_settings[edit.name], client_id)
    return new_strings, new_settings


_PLACEHOLDER = re.compile(r"\{identity\.[a-z_]+\}")


def resolve(text: str, placeholders: Mapping[str, str]) -> str:
    """Replace `{identity.client_id}`-style placeholders; an unknown one is an error, never
    written to Azure as is."""
    def one(match: re.Match[str]) -> str:
        if match.group(0) not in placeholders:
            raise RewriteError(f"placeholder {match.group(0)} has no value yet")
        return placeholders[match.group(0)]

    return _PLACEHOLDER.sub(one, text)


def replace_secret(values: Mapping[str, str], old: str, new: str) -> dict[str, str]:
    """Every value with one secret replaced by another (rollback after a revoke)."""
    return {k: v.replace(old, new) for k, v in values.items()}


def sql_password(value: str) -> str | None:
    """The password inside a connection string, for a rollback that must swap a new one in."""
    for keyword, raw in _segments(value):
        if _norm(keyword) in _PASSWORD_KEYS:
            text = raw.strip()
            if len(text) >= 2 and text[0] in "\"'{":
                close = {"\"": "\"", "'": "'", "{": "}"}[text[0]]
                return text[1:-1].replace(close * 2, close)
            return text
    return None


_PINNED_VERSION = (
    r"(?P<head>(?:/secrets/[^/\s)]+/|SecretVersion\s*=\s*))(?P<version>{version})"
    r"(?=[/;)\s]|$)")


def repin_key_vault_reference(value: str, old_version: str, new_version: str) -> str:
    """An App Service Key Vault reference that pins `old_version` (in a SecretUri or as
    SecretVersion=) made to pin `new_version`; any other value comes back unchanged."""
    if not value.lstrip().startswith("@Microsoft.KeyVault("):
        return value
    pattern = re.compile(_PINNED_VERSION.format(version=re.escape(old_version)), re.IGNORECASE)
    return pattern.sub(lambda m: m.group("head") + new_version, value, count=1)

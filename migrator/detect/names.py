"""Setting names as the detector reads them: words, the role of the last words, and a prefix.

Apps spell one configuration key many ways: `AZURE_CLIENT_SECRET` (environment style),
`AzureAd__ClientSecret` (ASP.NET Core sections in Linux environment variables),
`AzureAd:ClientSecret` (sections on Windows), `clientsecret`. Reducing a name to lower-case
words lets one table of suffixes recognise them all. The words before the suffix (the prefix)
pair a secret with the client id and tenant of the same credential: `SP_PASSWORD` goes with
`SP_APP_ID`, not with the `AZURE_CLIENT_ID` of another credential in the same app.

`app` is ambiguous: in `MicrosoftAppPassword` it belongs to the role ("app password", beside
`MicrosoftAppId`), in `MyApp__ClientSecret` to the prefix. A name therefore keeps every prefix
its role's suffixes allow, and two settings pair when their prefixes meet.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

_SECTION_SEPARATOR = re.compile(r"__|:")
_NOT_ALPHANUMERIC = re.compile(r"[^A-Za-z0-9]+")
# An upper-case run not followed by lower case (an acronym: ID, AD), a capitalised or
# lower-case word, or digits: AzureADClientID -> Azure, AD, Client, ID.
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
# Lower-case spellings that glue role words together: `AzureAd__clientsecret`, `appid`.
_COMPOUNDS: dict[str, tuple[str, ...]] = {
    "clientsecret": ("client", "secret"),
    "clientid": ("client", "id"),
    "appid": ("app", "id"),
    "applicationid": ("application", "id"),
    "tenantid": ("tenant", "id"),
    "username": ("user", "name"),
    "serviceprincipal": ("service", "principal"),
}
# Microsoft.Identity.Web's credential list: `AzureAd__ClientCredentials__0__ClientSecret` belongs
# to the `AzureAd` section's application, whose client id is `AzureAd__ClientId`.
_CREDENTIAL_SLOT = re.compile(r"(?P<owner>.*?)clientcredentials\d+")


class Role(enum.Enum):
    """What a setting holds, judged from its name alone."""

    CLIENT_SECRET = "client-secret"  # unambiguous: ClientSecret, ServicePrincipalKey
    SECRET_WORD = "secret-word"  # Password, Secret: a principal's only beside a principal's id
    CLIENT_ID = "client-id"
    TENANT = "tenant"
    AUTHORITY = "authority"  # a sign-in URL that may name the tenant
    USER_NAME = "user-name"  # a principal's id when it is a GUID, a person or an admin otherwise


# Most specific first: the first suffix that matches decides the role.
ROLE_SUFFIXES: tuple[tuple[tuple[str, ...], Role], ...] = (
    (("service", "principal", "secret"), Role.CLIENT_SECRET),
    (("service", "principal", "password"), Role.CLIENT_SECRET),
    (("service", "principal", "key"), Role.CLIENT_SECRET),
    (("client", "secret"), Role.CLIENT_SECRET),
    (("service", "principal", "id"), Role.CLIENT_ID),
    (("client", "id"), Role.CLIENT_ID),
    (("app", "id"), Role.CLIENT_ID),
    (("application", "id"), Role.CLIENT_ID),
    (("app", "tenant", "id"), Role.TENANT),
    (("tenant", "id"), Role.TENANT),
    (("tenant",), Role.TENANT),
    (("authority",), Role.AUTHORITY),
    (("instance",), Role.AUTHORITY),
    (("user", "name"), Role.USER_NAME),
    (("user", "id"), Role.USER_NAME),
    (("user",), Role.USER_NAME),
    (("app", "password"), Role.SECRET_WORD),
    (("app", "secret"), Role.SECRET_WORD),
    (("app", "key"), Role.SECRET_WORD),
    (("password",), Role.SECRET_WORD),
    (("secret",), Role.SECRET_WORD),
    (("pwd",), Role.SECRET_WORD),
)


@dataclass(frozen=True)
class SettingName:
    """One setting name, taken apart once."""

    raw: str
    words: tuple[str, ...]
    hierarchical: bool  # written in configuration sections (`__` or `:`)
    section_prefix: str  # the sections before the last one, as joined words
    leaf: str  # the last section, as joined words
    role: Role | None
    prefixes: frozenset[str]  # the owner of the credential, as joined words
    credential_slot: bool  # inside Microsoft.Identity.Web's ClientCredentials list

    @property
    def prefix(self) -> str:
        """The longest prefix, for rules that ask about one owner (`azuread`, `azure`)."""
        return max(self.prefixes, key=lambda p: (len(p), p))


def words(text: str) -> tuple[str, ...]:
    """Lower-case words of `text`, whatever its separators and casing."""
    found: list[str] = []
    for part in _NOT_ALPHANUMERIC.split(text):
        for word in _WORD.findall(part):
            found.extend(_COMPOUNDS.get(word.lower(), (word.lower(),)))
    return tuple(found)


def parse_name(raw: str) -> SettingName:
    """Take a setting name apart: its role, its owner's prefixes, its configuration sections."""
    sections = _SECTION_SEPARATOR.split(raw)
    all_words = words(raw)
    role: Role | None = None
    prefixes: set[str] = set()
    for suffix, suffix_role in ROLE_SUFFIXES:
        if role not in (None, suffix_role) or len(all_words) < len(suffix):
            continue
        if all_words[len(all_words) - len(suffix):] == suffix:
            role = suffix_role
            prefixes.add("".join(all_words[:len(all_words) - len(suffix)]))
    if role is None:  # no role: the owner is everything before the last section or word
        owner = sections[:-1] if len(sections) > 1 else all_words[:-1]
        prefixes.add("".join("".join(words(part)) for part in owner))
    owners = {_owner(p) for p in prefixes}
    return SettingName(
        raw=raw,
        words=all_words,
        hierarchical=len(sections) > 1,
        section_prefix="".join("".join(words(part)) for part in sections[:-1]),
        leaf="".join(words(sections[-1])),
        role=role,
        prefixes=frozenset(owner for owner, _ in owners),
        credential_slot=any(slot for _, slot in owners),
    )


def _owner(prefix: str) -> tuple[str, bool]:
    """Strip a `ClientCredentials__N` slot: the credential belongs to the section above it."""
    slot = _CREDENTIAL_SLOT.fullmatch(prefix)
    return (slot["owner"], True) if slot else (prefix, False)

"""Entra ID's sign-in logs for service principals and managed identities, as Graph serves them.

Why this exists: before a migration revokes an old client secret it wants evidence that nothing
still signs in with it. Only Entra can give that evidence: every client-credentials token
request, successful or not, is logged with the keyId of the password credential used, the
caller's address and the resource the token was for. A CI pipeline or a script holding a copy
of the secret shows up there and nowhere else. The simulator records every sign-in its token
endpoint, its app runtimes and its `external_callers` make, and serves them at
`GET /beta/auditLogs/signIns` (graph.py) as harshly as Graph does.

Facts modelled (each checked against Microsoft's pages):

- The resource and its fields (`servicePrincipalCredentialKeyId`, `signInEventTypes`,
  `clientCredentialType`, `servicePrincipalId`, `servicePrincipalName`, `resourceId`,
  `resourceDisplayName`, `ipAddress`, `status {errorCode, failureReason, additionalDetails}`,
  `isInteractive`, `correlationId`, `managedServiceIdentity`): "signIn resource type",
  learn.microsoft.com/graph/api/resources/signin?view=graph-rest-beta. "You must have a
  Microsoft Entra ID P1 or P2 license to download sign-in logs using the Microsoft Graph API."
- The list: `GET /beta/auditLogs/signIns`, application permission `AuditLog.Read.All`; "The
  maximum and default page size is 1,000 objects and by default, the most recent sign-ins are
  returned first" (learn.microsoft.com/graph/api/signin-list?view=graph-rest-beta).
- Without a premium licence Graph answers 403
  `Authentication_RequestFromNonPremiumTenantOrB2CTenant`, "Neither tenant is B2C or tenant
  doesn't have premium license" (learn.microsoft.com/entra/identity/monitoring-health/
  howto-configure-prerequisites-for-reporting-api, "Common errors"; the body as
  github.com/microsoftgraph/microsoft-graph-docs-contrib/issues/3808 quotes it).
- Managed identity sign-ins are a log of their own ("except managed identity sign-in, which are
  included only in the managed identity sign-in log", learn.microsoft.com/entra/identity/
  monitoring-health/concept-service-principal-sign-ins): `signInEventTypes: ["managedIdentity"]`,
  so a filter for `servicePrincipal` must leave them out.
- Logs arrive late: "Sign-ins: 2 mins (95th percentile), 5 mins (99th percentile)" (the retired
  "Azure AD reporting latencies" page, docs.microsoft.com/azure/active-directory/
  reports-monitoring/reference-reports-latencies; learn.microsoft.com/entra/identity/
  monitoring-health/reference-log-latency now gives no figure). The simulator hides an event
  until `created + Delays.sign_in_ingestion` (180 s unless shortened).

Secret text never enters an event: an event names the credential by keyId, and a failed sign-in
with an unknown secret names none, as Entra does.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

Json = dict[str, Any]
EventType = Literal["servicePrincipal", "managedIdentity"]

# The resources a token may be for: app id and the display name Entra logs for it.
GRAPH_RESOURCE = ("00000003-0000-0000-c000-000000000000", "Microsoft Graph")
ARM_RESOURCE = ("797f4846-ba00-4fd7-ba43-dac1f8f63013", "Windows Azure Service Management API")
KEYVAULT_RESOURCE = ("cfa8b339-82a2-471a-a3c9-0fc0be7a4093", "Azure Key Vault")
STORAGE_RESOURCE = ("e406a681-f3d4-42a8-90b6-c2b029497af1", "Azure Storage")
SQL_RESOURCE = ("022907d3-0f1b-48f7-badc-1ba6abab6d66", "Azure SQL Database")
LOG_ANALYTICS_RESOURCE = ("ca7f3f0b-7d91-482c-8e09-c5d840d0eac5", "Log Analytics API")
NAMED_RESOURCES: dict[str, tuple[str, str]] = {
    "graph": GRAPH_RESOURCE, "arm": ARM_RESOURCE, "keyvault": KEYVAULT_RESOURCE,
    "storage": STORAGE_RESOURCE, "sql": SQL_RESOURCE,
}
# Token audiences (scope without `/.default`) -> resource.
_AUDIENCES: dict[str, tuple[str, str]] = {
    "https://graph.microsoft.com": GRAPH_RESOURCE,
    GRAPH_RESOURCE[0]: GRAPH_RESOURCE,
    "https://management.azure.com": ARM_RESOURCE,
    "https://management.core.windows.net": ARM_RESOURCE,
    "https://vault.azure.net": KEYVAULT_RESOURCE,
    "https://storage.azure.com": STORAGE_RESOURCE,
    "https://database.windows.net": SQL_RESOURCE,
    "https://api.loganalytics.io": LOG_ANALYTICS_RESOURCE,
    "https://api.loganalytics.azure.com": LOG_ANALYTICS_RESOURCE,
}

LICENCE_CODE = "Authentication_RequestFromNonPremiumTenantOrB2CTenant"
LICENCE_MESSAGE = "Neither tenant is B2C or tenant doesn't have premium license"
DEFAULT_PAGE_SIZE = 1000
MAX_PAGE_SIZE = 1000
# Newest events each external caller keeps when its history is materialised: a caller every
# second for a year must not fill the simulator's memory.
CALLER_EVENT_CAP = 5000
# Newest events the whole log keeps (app probes add some on every health check).
LOG_CAP = 200_000
MAX_FILTER_LENGTH = 4096


def resource_for_audience(audience: str) -> tuple[str, str]:
    """The resource (app id, display name) a token audience names; an unknown one is logged
    under its own name, as Entra logs a resource it cannot name by its id."""
    bare = audience.strip().rstrip("/")
    return _AUDIENCES.get(bare.lower(), (bare, bare))


def _graph_time(at: datetime) -> str:
    """Sign-in times as Graph writes them: UTC, to the second, `Z`."""
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class SignInEvent:
    """One sign-in as Entra logs it. Never holds secret text: the credential is its keyId."""

    id: str
    created: datetime
    event_type: EventType
    app_id: str
    app_display_name: str
    service_principal_id: str  # object id; "" for an app id the tenant does not know
    ip_address: str
    resource_id: str
    resource_display_name: str
    tenant_id: str
    key_id: str | None = None  # the password credential used; None when none matched
    error_code: int = 0
    failure_reason: str | None = None
    correlation_id: str = ""
    msi_type: str | None = None  # managed identities: systemAssigned | userAssigned
    associated_resource_id: str | None = None  # managed identities: the resource holding it

    @property
    def succeeded(self) -> bool:
        return self.error_code == 0

    def as_graph(self) -> Json:
        """The beta `microsoft.graph.signIn` JSON of this event."""
        managed = self.event_type == "managedIdentity"
        return {
            "id": self.id,
            "createdDateTime": _graph_time(self.created),
            "appDisplayName": self.app_display_name,
            "appId": self.app_id,
            "appOwnerTenantId": self.tenant_id,
            "correlationId": self.correlation_id,
            "clientCredentialType": "managedIdentity" if managed else "clientSecret",
            "conditionalAccessStatus": "notApplied",
            "ipAddress": self.ip_address,
            "isInteractive": False,
            "resourceDisplayName": self.resource_display_name,
            "resourceId": self.resource_id,
            "resourceTenantId": self.tenant_id,
            "homeTenantId": self.tenant_id,
            "servicePrincipalCredentialKeyId": self.key_id,
            "servicePrincipalCredentialThumbprint": "",
            "servicePrincipalId": self.service_principal_id,
            "servicePrincipalName": self.app_display_name,
            "signInEventTypes": [self.event_type],
            "tokenIssuerType": "AzureAD",
            "userDisplayName": None, "userId": "", "userPrincipalName": None,
            "managedServiceIdentity": {
                "msiType": self.msi_type or "none",
                "associatedResourceId": self.associated_resource_id,
                "federatedTokenId": None, "federatedTokenIssuer": None,
            },
            "location": {"city": None, "state": None, "countryOrRegion": None,
                         "geoCoordinates": None},
            "status": {
                "errorCode": self.error_code,
                "failureReason": self.failure_reason,
                "additionalDetails": None if self.succeeded else (
                    "The client credentials presented were rejected; see the error code."),
            },
        }


def new_event(**fields: Any) -> SignInEvent:
    """An event with fresh ids (Entra's `id` and `correlationId` are GUIDs)."""
    fields.setdefault("id", str(uuid.uuid4()))
    fields.setdefault("correlation_id", str(uuid.uuid4()))
    return SignInEvent(**fields)


# --- the log -----------------------------------------------------------------------------------


def _order(event: SignInEvent) -> tuple[datetime, str]:
    return event.created, event.id


class SignInLog:
    """Every sign-in, oldest first, bounded to the newest `cap`. Safe across threads: it takes
    the lock it is given (the tenant's, so a sign-in is recorded in the same critical section
    as the credential check that caused it)."""

    def __init__(self, lock: threading.RLock | None = None, cap: int = LOG_CAP) -> None:
        self._lock = lock or threading.RLock()
        self._events: list[SignInEvent] = []
        self.cap = cap

    def __len__(self) -> int:
        with self._lock:
            return len(self._events)

    def __iter__(self) -> Iterator[SignInEvent]:
        with self._lock:
            return iter(list(self._events))

    def append(self, event: SignInEvent) -> None:
        with self._lock:
            if not self._events or _order(self._events[-1]) <= _order(event):
                self._events.append(event)
            else:  # a caller's backfilled history lands in the past
                bisect.insort(self._events, event, key=_order)
            if len(self._events) > self.cap + self.cap // 10:
                del self._events[:len(self._events) - self.cap]

    def extend(self, events: Iterable[SignInEvent]) -> None:
        for event in events:
            self.append(event)

    def select(self, predicate: Callable[[SignInEvent], bool] | None, now: datetime,
               delay: float) -> list[SignInEvent]:
        """Events matching `predicate` that Graph would show at `now`: ingested, that is
        `created + delay <= now`. Newest first (ties: by id, descending)."""
        horizon = now - timedelta(seconds=delay)
        with self._lock:
            end = bisect.bisect_right(self._events, horizon, key=lambda e: e.created)
            visible = self._events[:end]
        return [e for e in reversed(visible) if predicate is None or predicate(e)]


# --- paging ------------------------------------------------------------------------------------

_TOKEN_PREFIX = "simsignin1:"


def skiptoken_after(event: SignInEvent) -> str:
    """An opaque cursor naming the last event served: the next page starts below it, so new
    sign-ins arriving between pages neither repeat nor shift what follows."""
    raw = f"{_TOKEN_PREFIX}{event.created.isoformat()}|{event.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


class SkipTokenError(ValueError):
    """A `$skiptoken` this log did not make."""


def parse_skiptoken(token: str) -> tuple[datetime, str]:
    """(created, id) of the last event a page served; SkipTokenError for a foreign token."""
    try:
        decoded = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise SkipTokenError(token) from None
    if not decoded.startswith(_TOKEN_PREFIX) or "|" not in decoded:
        raise SkipTokenError(token)
    stamp, _, event_id = decoded.removeprefix(_TOKEN_PREFIX).partition("|")
    try:
        created = datetime.fromisoformat(stamp)
    except ValueError:
        raise SkipTokenError(token) from None
    if created.tzinfo is None:
        raise SkipTokenError(token)
    return created, event_id


def page_after(events: list[SignInEvent], token: str | None, size: int
               ) -> tuple[list[SignInEvent], bool]:
    """One page of newest-first `events` below the cursor `token`: (page, more follow)."""
    if token:
        cursor = parse_skiptoken(token)
        events = [e for e in events if _order(e) < cursor]
    return events[:size], len(events) > size


# --- $filter -----------------------------------------------------------------------------------


class FilterError(ValueError):
    """A `$filter` outside what Graph (and so the simulator) accepts; `code` is Graph's."""

    def __init__(self, message: str, code: str = "BadRequest") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


Predicate = Callable[[SignInEvent], bool]

_EVENT_TYPES = {"servicePrincipal", "managedIdentity", "interactiveUser", "nonInteractiveUser"}
_GUID_PROPS = {"appid": "app_id", "serviceprincipalid": "service_principal_id"}
_TIME_OPS: dict[str, Callable[[datetime, datetime], bool]] = {
    "ge": lambda a, b: a >= b, "gt": lambda a, b: a > b,
    "le": lambda a, b: a <= b, "lt": lambda a, b: a < b,
}


@dataclass(frozen=True)
class _Token:
    kind: Literal["name", "string", "datetime", "punct", "end"]
    text: str
    pos: int


def _tokens(text: str) -> list[_Token]:
    """Names (letters, digits), quoted strings ('' escapes a quote), unquoted date-times, and
    the punctuation `( ) / : ,`; anything else is a syntax error at its position."""
    out: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c in "()/:,":
            out.append(_Token("punct", c, i))
            i += 1
        elif c == "'":
            start, i, chars = i, i + 1, []
            while True:
                if i >= n:
                    raise _syntax(text, start)
                if text[i] == "'":
                    if i + 1 < n and text[i + 1] == "'":
                        chars.append("'")
                        i += 2
                        continue
                    i += 1
                    break
                chars.append(text[i])
                i += 1
            out.append(_Token("string", "".join(chars), start))
        elif c.isascii() and c.isdigit():
            start = i
            while i < n and (text[i].isascii() and (text[i].isalnum() or text[i] in "-:.")):
                i += 1
            out.append(_Token("datetime", text[start:i], start))
        elif c.isascii() and c.isalpha():
            start = i
            while i < n and text[i].isascii() and (text[i].isalnum() or text[i] == "_"):
                i += 1
            out.append(_Token("name", text[start:i], start))
        else:
            raise _syntax(text, i)
    out.append(_Token("end", "", n))
    return out


def _shown(text: str) -> str:
    return text if len(text) <= 200 else text[:200] + "..."


def _syntax(text: str, pos: int) -> FilterError:
    return FilterError(f"Invalid filter clause: Syntax error at position {pos} in "
                       f"'{_shown(text)}'.")


def _unsupported(prop: str) -> FilterError:
    return FilterError(f"Unsupported or invalid query filter clause specified for property "
                       f"'{_shown(prop)}' of resource 'SignIn'.", "Request_UnsupportedQuery")


def _parse_datetime(token: _Token, text: str) -> datetime:
    raw = token.text
    if not raw.endswith("Z") or "T" not in raw:
        raise FilterError(f"Invalid filter clause: '{_shown(raw)}' is not a date-time literal "
                          "in UTC (e.g. 2026-12-01T00:00:00Z).")
    head, _, fraction = raw[:-1].partition(".")
    if fraction and not (fraction.isdigit() and len(fraction) <= 7):
        raise _syntax(text, token.pos)
    try:
        at = datetime.strptime(head, "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        raise FilterError(f"Invalid filter clause: '{_shown(raw)}' is not a date-time "
                          "literal in UTC (e.g. 2026-12-01T00:00:00Z).") from None
    micro = int((fraction + "000000")[:6]) if fraction else 0
    return at.replace(microsecond=micro, tzinfo=timezone.utc)


def _guid(token: _Token) -> str:
    try:
        return str(uuid.UUID(token.text))
    except ValueError:
        raise FilterError(f"Invalid filter clause: '{_shown(token.text)}' is not a valid "
                          "GUID.") from None


class _Parser:
    """Recursive descent over the subset the product sends:

        filter     := clause ("and" clause)*
        clause     := "(" comparison ("or" comparison)* ")" | comparison | any
        any        := "signInEventTypes" "/" "any" "(" var ":" var "eq" string ")"
        comparison := ("appId" | "servicePrincipalId") "eq" string
                    | "createdDateTime" ("ge" | "gt" | "le" | "lt") datetime
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokens(text)
        self.i = 0

    @property
    def tok(self) -> _Token:
        return self.toks[self.i]

    def take(self) -> _Token:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def expect(self, kind: str, text: str | None = None) -> _Token:
        tok = self.tok
        if tok.kind != kind or (text is not None and tok.text.lower() != text.lower()):
            raise _syntax(self.text, tok.pos)
        return self.take()

    def keyword(self, word: str) -> bool:
        return self.tok.kind == "name" and self.tok.text.lower() == word

    def parse(self) -> Predicate:
        clauses = [self.clause()]
        while self.keyword("and"):
            self.take()
            clauses.append(self.clause())
        self.expect("end")
        return lambda e: all(c(e) for c in clauses)

    def clause(self) -> Predicate:
        if self.tok.kind == "punct" and self.tok.text == "(":
            self.take()
            options = [self.comparison()]
            while self.keyword("or"):
                self.take()
                options.append(self.comparison())
            self.expect("punct", ")")
            return lambda e: any(o(e) for o in options)
        if self.keyword("signineventtypes"):
            return self.any_clause()
        return self.comparison()

    def any_clause(self) -> Predicate:
        self.take()
        self.expect("punct", "/")
        self.expect("name", "any")
        self.expect("punct", "(")
        var = self.expect("name").text
        self.expect("punct", ":")
        if self.expect("name").text != var:
            raise _syntax(self.text, self.toks[self.i - 1].pos)
        self.expect("name", "eq")
        value = self.expect("string").text
        self.expect("punct", ")")
        if value not in _EVENT_TYPES:
            raise FilterError(f"Invalid filter clause: '{_shown(value)}' is not a sign-in "
                              "event type.")
        return lambda e: e.event_type == value

    def comparison(self) -> Predicate:
        prop = self.tok
        if prop.kind != "name" or self.keyword("and") or self.keyword("or"):
            raise _syntax(self.text, prop.pos)
        self.take()
        lowered = prop.text.lower()
        if lowered in _GUID_PROPS:
            self.expect("name", "eq")
            want = _guid(self.expect("string"))
            attr = _GUID_PROPS[lowered]
            return lambda e: str(getattr(e, attr)).lower() == want
        if lowered == "createddatetime":
            op = self.expect("name").text.lower()
            if op not in _TIME_OPS:
                raise _syntax(self.text, self.toks[self.i - 1].pos)
            at = _parse_datetime(self.expect("datetime"), self.text)
            compare = _TIME_OPS[op]
            return lambda e: compare(e.created, at)
        raise _unsupported(prop.text)


def parse_filter(text: str) -> Predicate:
    """The predicate of a sign-in `$filter`, or FilterError (Graph's 400) for anything outside
    the grammar in `_Parser`. The text is untrusted: it is tokenised, never evaluated."""
    if len(text) > MAX_FILTER_LENGTH:
        raise FilterError(f"Invalid filter clause: the filter is longer than "
                          f"{MAX_FILTER_LENGTH} characters.")
    if not text.strip():
        raise _syntax(text, 0)
    return _Parser(text).parse()


# --- external callers --------------------------------------------------------------------------


@dataclass
class ExternalCaller:
    """Something outside App Service (a CI pipeline, a script on a VM) that signs in with a
    principal's secret every `every` seconds from a fixed address. Its sign-ins are made
    lazily (`due`): the first at `origin`, then one each `every` seconds, while active."""

    name: str
    principal: str  # estate name of the principal whose secret it holds
    app_id: str
    secret_index: int
    ip: str
    every: float
    resource: tuple[str, str]  # (app id, display name)
    active: bool
    history_days: float
    origin: datetime  # when its first sign-in was (tenant start - history_days)
    secret: str = field(repr=False, default="")  # its copy; never shown anywhere
    next_at: datetime | None = None  # the next sign-in not yet made
    stopped_at: datetime | None = None
    made: int = 0

    def __post_init__(self) -> None:
        if self.next_at is None:
            self.next_at = self.origin

    def due(self, now: datetime, cap: int = CALLER_EVENT_CAP) -> list[datetime]:
        """The times of the sign-ins it has made since last asked, up to `now`: at most the
        newest `cap` (older ones are skipped, never built), none while stopped."""
        assert self.next_at is not None
        if not self.active or self.next_at > now:
            return []
        step = timedelta(seconds=self.every)
        count = int((now - self.next_at) / step) + 1
        skipped = max(0, count - cap)
        first = self.next_at + skipped * step
        times = [first + k * step for k in range(count - skipped)]
        self.next_at = first + (count - skipped) * step
        self.made += len(times)
        return times

    def set_active(self, active: bool, now: datetime) -> None:
        """Stop (no sign-in after `now`) or start again (the next one `every` from now)."""
        if active == self.active:
            return
        self.active = active
        if active:
            self.stopped_at = None
            self.next_at = now + timedelta(seconds=self.every)
        else:
            self.stopped_at = now

    def as_json(self, key_id: str | None) -> Json:
        """What the admin interface shows: never the secret, its keyId at most."""
        return {
            "name": self.name, "principal": self.principal, "appId": self.app_id,
            "secret": self.secret_index, "keyId": key_id, "ip": self.ip, "every": self.every,
            "resourceId": self.resource[0], "resourceDisplayName": self.resource[1],
            "active": self.active, "historyDays": self.history_days,
            "stoppedAt": _graph_time(self.stopped_at) if self.stopped_at else None,
            "signIns": self.made,
        }

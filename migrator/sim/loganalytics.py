"""A Log Analytics workspace that Entra's diagnostic settings feed, and its query API.

Why this exists: Graph serves sign-in logs only to a P1/P2 tenant and keeps them 30 days; many
tenants instead send them, through Entra's diagnostic settings, to a Log Analytics workspace and
read them with KQL. The product reads that evidence with azure-monitor-query's
`LogsQueryClient.query_workspace`, unchanged, against this module.

Facts modelled (each checked against Microsoft's pages or the SDK's code):

- The API: `POST {endpoint}/v1/workspaces/{workspaceId}/query`, body `{"query": KQL,
  "timespan": ISO 8601 interval or duration, "workspaces": [...]}` (azure-monitor-query 2.0.0,
  `_operations.py` and `_patch.py`: it sends `"timespan": null` and `"workspaces": null` when
  not given, and an optional `Prefer: wait=…,include-statistics=true,include-render=true`).
  `workspaceId` is the workspace's customer id (a GUID, "Workspace ID" in the portal). Tokens
  are for `https://api.loganalytics.io` (the SDK's audience defaults to its endpoint, so a
  client of this simulator passes `audience="https://api.loganalytics.io"`).
- The answer: `{"tables": [{"name": "PrimaryResult", "columns": [{"name", "type"}], "rows"}]}`.
  Errors: `{"error": {"message", "code", "correlationId", "innererror": {...}}}`: 403
  `InsufficientAccessError` "The provided credentials have insufficient access to perform the
  requested operation" (the SDKs' troubleshooting guides); 404 `WorkspaceNotFoundError` "The
  workspace could not be found"; 400 `BadArgumentError` "The request had some invalid
  properties" with an innererror `SyntaxError` ("A recognition error occurred in the query.",
  innermost `SYN0002` "Query could not be parsed at '…' on line [l,p]") or `SemanticError` ("A
  semantic error occurred.", innermost `SEM0100` "'where' operator: Failed to resolve scalar
  expression named '…'") (MicrosoftDocs/feedback#1792, MicrosoftDocs/azure-docs#18012); 401
  `AuthorizationRequiredError` "Valid authentication was not provided"
  (microsoft/PowerBI-LogAnalytics-Template-Reports#5); 404 `PathNotFoundError` "The requested
  path does not exist" (Azure/azure-cli-extensions#2479).
- Result truncation: "Kusto limits the number of records returned to the client to 500,000,
  and the overall data size for those records to 64 MB. When either of these limits is
  exceeded, the query fails with a 'partial query failure'" (Azure Data Explorer, "Query
  limits"); the API then answers 200 with the rows it kept and `"error": {"code":
  "PartialError", ...}`, which the SDK returns as a LogsQueryPartialResult
  (Azure/azure-sdk-for-python#25137). Both caps are modelled (`Tenant.log_analytics_row_cap`,
  `log_analytics_size_cap`; the size is estimated from the rows' text).
- Access is Azure RBAC on the workspace: `Microsoft.OperationalInsights/workspaces/query/read`
  (Log Analytics Reader and Reader hold it through `*/read`; Log Analytics Data Reader by name).
- The table `AADServicePrincipalSignInLogs` (learn.microsoft.com/azure/azure-monitor/
  reference/tables/aadserviceprincipalsigninlogs): string columns but `TimeGenerated`
  (datetime) and `DurationMs` (long); `ResultType` is "0" for a success, else the AADSTS
  number as text; `ResourceIdentity` is the app id of the resource signed in to. Managed
  identities' sign-ins go to `AADManagedIdentitySignInLogs`, not here. A workspace the
  diagnostic settings do not feed has no such table: a query of it is a SemanticError.
- Ingestion: rows arrive after Graph has them (Entra, then diagnostic settings, then Azure
  Monitor's pipeline: "The average latency to ingest log data is between 20 seconds and 3
  minutes", learn.microsoft.com/azure/azure-monitor/logs/data-ingestion-time, on top of
  Entra's own). The simulator shows an event once `created + Delays.workspace_ingestion`.

KQL: only the shape the product sends is understood, tokenised and parsed, never evaluated:

    AADServicePrincipalSignInLogs
    | where TimeGenerated >= datetime(2026-12-01T00:00:00Z)
    | where AppId in~ ("0a5e3c1d-...", "...")
    | project TimeGenerated, AppId, ServicePrincipalCredentialKeyId, IPAddress
    | order by TimeGenerated asc
    | take 50000

Operators are case-sensitive, as in Kusto; `where` also takes `and`, `< <= > >=` on
TimeGenerated, `in`, `in~`, `!in`, `!in~`, `==`, `=~`, `!=` on string columns; `sort by` and
`limit` are the aliases Kusto has. Any other operator is refused with a 400 that says the
simulator does not implement it. Rows never hold secret text: a credential is its keyId.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from operator import itemgetter
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from migrator.sim.context import LOG_ANALYTICS_AUDIENCES, SimContext
from migrator.sim.signins import SignInEvent
from migrator.sim.state import LogAnalyticsWorkspace, Tenant, utcnow
from migrator.sim.tokens import TokenError

TABLE = "AADServicePrincipalSignInLogs"
QUERY_ACTION = "Microsoft.OperationalInsights/workspaces/query/read"
MAX_QUERY_LENGTH = 65_536
ColumnType = Literal["string", "datetime", "long"]
# The table's columns the simulator fills, with Log Analytics' types (the table reference).
COLUMNS: tuple[tuple[str, ColumnType], ...] = (
    ("TenantId", "string"),
    ("SourceSystem", "string"),
    ("TimeGenerated", "datetime"),
    ("OperationName", "string"),
    ("Category", "string"),
    ("ResultType", "string"),
    ("ResultSignature", "string"),
    ("ResultDescription", "string"),
    ("DurationMs", "long"),
    ("CorrelationId", "string"),
    ("Id", "string"),
    ("Location", "string"),
    ("AppId", "string"),
    ("IPAddress", "string"),
    ("ResourceDisplayName", "string"),
    ("ResourceIdentity", "string"),
    ("ServicePrincipalCredentialKeyId", "string"),
    ("ServicePrincipalCredentialThumbprint", "string"),
    ("ServicePrincipalId", "string"),
    ("ServicePrincipalName", "string"),
    ("Type", "string"),
)
COLUMN_TYPES: dict[str, ColumnType] = dict(COLUMNS)

Row = dict[str, Any]  # column -> value (datetime for TimeGenerated, int for DurationMs)


# --- rows ------------------------------------------------------------------------------------


def row_of(event: SignInEvent) -> Row:
    """The AADServicePrincipalSignInLogs row Entra's diagnostic settings write for a
    service-principal sign-in. Kusto has no null string: a missing value is ""."""
    return {
        "TenantId": event.tenant_id,
        "SourceSystem": "Azure AD",
        "TimeGenerated": event.created.astimezone(timezone.utc),
        "OperationName": "Sign-in activity",
        "Category": "ServicePrincipalSignInLogs",
        "ResultType": str(event.error_code),
        "ResultSignature": "SUCCESS" if event.succeeded else "FAILURE",
        "ResultDescription": event.failure_reason or "",
        "DurationMs": 0,
        "CorrelationId": event.correlation_id,
        "Id": event.id,
        "Location": "",
        "AppId": event.app_id,
        "IPAddress": event.ip_address,
        "ResourceDisplayName": event.resource_display_name,
        "ResourceIdentity": event.resource_id,
        "ServicePrincipalCredentialKeyId": event.key_id or "",
        "ServicePrincipalCredentialThumbprint": "",
        "ServicePrincipalId": event.service_principal_id,
        "ServicePrincipalName": event.app_display_name,
        "Type": TABLE,
    }


def rows_of(events: Iterable[SignInEvent]) -> list[Row]:
    """The table's rows for a tenant's sign-ins, oldest first: service-principal sign-ins
    only (managed identities have a table of their own)."""
    rows = [row_of(e) for e in events if e.event_type == "servicePrincipal"]
    rows.sort(key=lambda r: (r["TimeGenerated"], r["Id"]))
    return rows


def workspace_rows(tenant: Tenant, now: datetime | None = None) -> list[Row]:
    """What a workspace fed with the tenant's sign-ins holds at `now`: what has been ingested,
    that is `created + tenant.workspace_delay <= now`."""
    with tenant.lock:
        tenant.catch_up_sign_ins()
        events = tenant.sign_ins.select(lambda e: e.event_type == "servicePrincipal",
                                        now or utcnow(), tenant.workspace_delay)
    return rows_of(events)


def kusto_time(at: datetime) -> str:
    """Datetimes as Log Analytics writes them: UTC, seven fractional digits, `Z`."""
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


# --- errors ----------------------------------------------------------------------------------


class QueryError(Exception):
    """A request Log Analytics refuses: HTTP status, its top-level code and message, and the
    chain of inner errors (outermost first) that says why."""

    def __init__(self, status: int, code: str, message: str,
                 inner: Sequence[dict[str, Any]] = ()) -> None:
        super().__init__(inner[-1]["message"] if inner else message)
        self.status = status
        self.code = code
        self.message = message
        self.inner = list(inner)

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"message": self.message, "code": self.code,
                                 "correlationId": str(uuid.uuid4())}
        holder = error
        for entry in self.inner:
            holder["innererror"] = dict(entry)
            holder = holder["innererror"]
        return {"error": error}


_BAD = "The request had some invalid properties"


def bad_argument(message: str, code: str = "BadArgumentError") -> QueryError:
    return QueryError(400, code, message)


def syntax_error(text: str, pos: int, shown: str | None = None) -> QueryError:
    """Kusto's parse error: the text at `pos`, its line and column (both from 1)."""
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    token = shown if shown is not None else (text[pos:pos + 1] if pos < len(text) else "<EOF>")
    token = token if len(token) <= 40 else token[:40] + "..."
    return QueryError(400, "BadArgumentError", _BAD, [
        {"code": "SyntaxError", "message": "A recognition error occurred in the query."},
        {"code": "SYN0002", "message": f"Query could not be parsed at '{token}' on line "
                                       f"[{line},{column}]", "line": line, "pos": column,
         "token": token},
    ])


def semantic_error(message: str, code: str | None = None) -> QueryError:
    inner: list[dict[str, Any]] = [{"code": "SemanticError",
                                    "message": "A semantic error occurred."}]
    inner.append({"code": code, "message": message} if code else
                 {"code": "SemanticError", "message": message})
    return QueryError(400, "BadArgumentError", _BAD, inner)


def unresolved(operator: str, name: str, kind: str = "scalar expression") -> QueryError:
    return semantic_error(f"'{operator}' operator: Failed to resolve {kind} named '{name}'",
                          "SEM0100")


def table_unknown(table: str, operator: str) -> QueryError:
    """What Kusto answers for a table the workspace does not have."""
    if operator:
        return unresolved(operator, table, "table or column expression")
    return semantic_error(f"Failed to resolve table or column expression named '{table}'",
                          "SEM0100")


def not_simulated(what: str) -> QueryError:
    """Valid KQL that the simulator does not run: refused loudly rather than misanswered."""
    return semantic_error(
        f"{what} is not implemented by the simulator, which runs only: {TABLE} | where … | "
        "project … | order by … | take N")


# --- tokens ----------------------------------------------------------------------------------

TokenKind = Literal["name", "string", "number", "op", "punct", "datetime", "end"]


@dataclass(frozen=True)
class Token:
    kind: TokenKind
    text: str
    pos: int


_OPS = (">=", "<=", "==", "!=", "=~", "!~", ">", "<")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WORD = re.compile(r"[0-9A-Za-z_.]+")
_DATETIME_CALL = re.compile(r"datetime\s*\(([^()]*)\)")


def tokens(text: str) -> list[Token]:
    """Names, quoted strings (backslash escapes), integers, `datetime(...)` literals, the
    comparison operators, `in~` and `!in[~]`, and the punctuation `| ( ) ,`; `//` starts a
    comment to the end of the line. Anything else is a syntax error at its position."""
    out: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
        elif c in "|(),":
            out.append(Token("punct", c, i))
            i += 1
        elif c in "\"'":
            start, i, chars = i, i + 1, []
            while True:
                if i >= n or text[i] == "\n":
                    raise syntax_error(text, start, c)
                if text[i] == "\\" and i + 1 < n:
                    chars.append({"n": "\n", "t": "\t"}.get(text[i + 1], text[i + 1]))
                    i += 2
                    continue
                if text[i] == c:
                    i += 1
                    break
                chars.append(text[i])
                i += 1
            out.append(Token("string", "".join(chars), start))
        elif c == "!" and re.match(r"!in(~)?(?![A-Za-z0-9_])", text[i:]):
            word = "!in~" if text.startswith("!in~", i) else "!in"
            out.append(Token("op", word, i))
            i += len(word)
        elif any(text.startswith(op, i) for op in _OPS):
            op = next(op for op in _OPS if text.startswith(op, i))
            out.append(Token("op", op, i))
            i += len(op)
        elif c.isascii() and c.isdigit():
            literal = _WORD.match(text, i)
            assert literal is not None
            if not literal.group(0).isdigit():  # 1e3, 5.0, 10d: not the integers `take` needs
                raise not_simulated(f"the literal '{literal.group(0)[:40]}'")
            out.append(Token("number", literal.group(0), i))
            i = literal.end()
        elif c.isascii() and (c.isalpha() or c == "_"):
            call = _DATETIME_CALL.match(text, i)
            if call is not None:
                out.append(Token("datetime", call.group(1).strip(), i))
                i = call.end()
                continue
            name = _NAME.match(text, i)
            assert name is not None
            word = name.group(0)
            if word == "in" and text.startswith("~", name.end()):
                out.append(Token("op", "in~", i))
                i = name.end() + 1
                continue
            out.append(Token("op" if word == "in" else "name", word, i))
            i = name.end()
        else:
            raise syntax_error(text, i)
    out.append(Token("end", "", n))
    return out


# --- the query -------------------------------------------------------------------------------

Predicate = Callable[[Row], bool]


@dataclass(frozen=True)
class Where:
    predicates: tuple[Predicate, ...]


@dataclass(frozen=True)
class Project:
    columns: tuple[str, ...]


@dataclass(frozen=True)
class OrderBy:
    column: str
    descending: bool


@dataclass(frozen=True)
class Take:
    count: int


Step = Where | Project | OrderBy | Take


@dataclass(frozen=True)
class Query:
    """A parsed query: its table and its pipeline, each step checked against the columns the
    step before it leaves."""

    table: str
    steps: tuple[Step, ...]
    columns: tuple[str, ...]  # what the last step leaves, in order
    first_operator: str = ""  # its name as written, for Kusto's error messages


_TIME_OPS: dict[str, Callable[[datetime, datetime], bool]] = {
    ">=": lambda a, b: a >= b, ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b, "<": lambda a, b: a < b,
    "==": lambda a, b: a == b, "!=": lambda a, b: a != b,
}
_SET_OPS = ("in", "in~", "!in", "!in~")
_STRING_OPS = ("==", "=~", "!=", "!~")
# Operators Kusto has that the simulator does not run (a clear refusal, not a syntax error).
_KQL_OPERATORS = frozenset({
    "summarize", "extend", "distinct", "join", "union", "top", "count", "parse", "mv-expand",
    "mv", "render", "search", "find", "lookup", "evaluate", "as", "invoke", "sample", "serialize",
    "getschema", "make", "facet", "fork", "partition", "reduce", "scan", "top-nested",
    "project-away", "project-keep", "project-rename", "project-reorder", "sample-distinct",
})


def parse_datetime_literal(raw: str) -> datetime:
    """The value of `datetime(...)`: an ISO 8601 date or date-time, UTC unless it says
    otherwise; quotes allowed, as Kusto allows them."""
    text = raw.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    m = re.fullmatch(r"(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,7}))?)?)?"
                     r"(Z|[+-]\d{2}:\d{2})?", text)
    if m is None:
        raise ValueError(text)
    year, month, day, hour, minute, second, fraction, zone = m.groups()
    micro = int((fraction + "000000")[:6]) if fraction else 0
    tz = timezone.utc
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        tz = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    return datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0),
                    int(second or 0), micro, tzinfo=tz).astimezone(timezone.utc)


class _Parser:
    """Recursive descent over the subset the product sends:

        query     := table ("|" operator)* end
        operator  := "where" condition ("and" condition)*
                   | "project" column ("," column)*
                   | ("order" | "sort") "by" column ("asc" | "desc")?
                   | ("take" | "limit") integer
        condition := column ("<" | "<=" | ">" | ">=" | "==" | "!=") datetime(...)
                   | column ("in" | "in~" | "!in" | "!in~") "(" string ("," string)* ")"
                   | column ("==" | "=~" | "!=" | "!~") string
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = tokens(text)
        self.i = 0
        self.columns: list[str] = [name for name, _ in COLUMNS]

    @property
    def tok(self) -> Token:
        return self.toks[self.i]

    def take(self) -> Token:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def fail(self, tok: Token | None = None) -> QueryError:
        at = tok or self.tok
        return syntax_error(self.text, at.pos, at.text or "<EOF>")

    def expect(self, kind: TokenKind, text: str | None = None) -> Token:
        tok = self.tok
        if tok.kind != kind or (text is not None and tok.text != text):
            raise self.fail()
        return self.take()

    def is_word(self, word: str) -> bool:
        return self.tok.kind == "name" and self.tok.text == word

    def parse(self) -> Query:
        table = self.expect("name")
        if table.text in _KQL_OPERATORS or table.text in ("let", "print", "datatable", "range"):
            raise not_simulated(f"a query starting with '{table.text}'")
        if table.text != TABLE:  # Kusto resolves the table before anything after it
            raise table_unknown(table.text, self.first_operator())
        first = self.first_operator()
        steps: list[Step] = []
        while self.tok.kind == "punct" and self.tok.text == "|":
            self.take()
            steps.append(self.operator())
        self.expect("end")
        return Query(table.text, tuple(steps), tuple(self.columns), first)

    def first_operator(self) -> str:
        after = self.toks[self.i:self.i + 2]
        if len(after) == 2 and after[0].text == "|" and after[1].kind == "name":
            return after[1].text
        return ""

    def operator(self) -> Step:
        word = self.tok
        if word.kind != "name":
            raise self.fail()
        if word.text == "where":
            self.take()
            conditions = [self.condition()]
            while self.is_word("and"):
                self.take()
                conditions.append(self.condition())
            return Where(tuple(conditions))
        if word.text == "project":
            self.take()
            names = [self.column("project")]
            while self.tok.kind == "punct" and self.tok.text == ",":
                self.take()
                names.append(self.column("project"))
            if len(set(names)) != len(names):
                duplicate = next(n for n in names if names.count(n) > 1)
                raise semantic_error(f"'project' operator: column '{duplicate}' is given "
                                     "twice", "SEM0032")
            self.columns = names
            return Project(tuple(names))
        if word.text in ("order", "sort"):
            self.take()
            self.expect("name", "by")
            name = self.column(f"{word.text} by")
            descending = True  # Kusto's default
            if self.is_word("asc") or self.is_word("desc"):
                descending = self.take().text == "desc"
            if self.tok.kind == "punct" and self.tok.text == ",":
                raise not_simulated("ordering by more than one column")
            return OrderBy(name, descending)
        if word.text in ("take", "limit"):
            self.take()
            count = self.expect("number")
            return Take(int(count.text))
        if word.text in _KQL_OPERATORS or word.text.startswith("project-"):
            raise not_simulated(f"the '{word.text}' operator")
        raise self.fail()

    def column(self, operator: str) -> str:
        tok = self.expect("name")
        if tok.text not in self.columns:
            raise unresolved(operator, tok.text)
        return tok.text

    def condition(self) -> Predicate:
        name = self.column("where")
        kind = COLUMN_TYPES[name]
        op = self.tok
        if op.kind != "op":
            raise self.fail()
        self.take()
        if op.text in _SET_OPS:
            return self.set_condition(name, kind, op.text)
        if self.tok.kind == "datetime":
            literal = self.take()
            if kind != "datetime":
                raise semantic_error(f"Cannot compare values of types {kind} and datetime. "
                                     "Try adding explicit casts")
            if op.text not in _TIME_OPS:
                raise self.fail(op)
            try:
                at = parse_datetime_literal(literal.text)
            except ValueError:
                raise self.fail(literal) from None
            compare = _TIME_OPS[op.text]
            return lambda row: compare(row[name], at)
        if self.tok.kind == "string":
            value = self.take().text
            if kind != "string":
                raise semantic_error(f"Cannot compare values of types {kind} and string. "
                                     "Try adding explicit casts")
            if op.text not in _STRING_OPS:
                raise self.fail(op)
            return _string_predicate(name, op.text, value)
        if self.tok.kind in ("name", "number"):
            raise not_simulated(f"comparing {name} with '{self.tok.text}'")
        raise self.fail()

    def set_condition(self, name: str, kind: ColumnType, op: str) -> Predicate:
        self.expect("punct", "(")
        values = [self.expect("string").text]
        while self.tok.kind == "punct" and self.tok.text == ",":
            self.take()
            values.append(self.expect("string").text)
        self.expect("punct", ")")
        if kind != "string":
            raise semantic_error(f"'{op}' operator: the left side is of type {kind}; the "
                                 "simulator takes string sets only")
        folded = op.endswith("~")
        wanted = frozenset(v.casefold() for v in values) if folded else frozenset(values)
        negate = op.startswith("!")
        if folded:
            return lambda row: (str(row[name]).casefold() in wanted) != negate
        return lambda row: (row[name] in wanted) != negate


def _string_predicate(name: str, op: str, value: str) -> Predicate:
    if op == "==":
        return lambda row: row[name] == value
    if op == "!=":
        return lambda row: row[name] != value
    folded = value.casefold()
    if op == "=~":
        return lambda row: str(row[name]).casefold() == folded
    return lambda row: str(row[name]).casefold() != folded  # !~


def parse_query(text: str) -> Query:
    """The pipeline of a query, or QueryError (the API's 400) for anything outside the grammar
    in `_Parser` or naming what the table does not have. The text is untrusted: it is
    tokenised, never evaluated."""
    if len(text) > MAX_QUERY_LENGTH:
        raise bad_argument(f"The query is longer than {MAX_QUERY_LENGTH} characters.")
    if not text.strip():
        raise QueryError(400, "BadArgumentError", _BAD, [
            {"code": "EmptyQueryError", "message": "The query was empty."}])
    return _Parser(text).parse()


# --- timespan --------------------------------------------------------------------------------

_DURATION = re.compile(r"P(?:(\d+(?:\.\d+)?)W)?(?:(\d+(?:\.\d+)?)D)?(?:T(?:(\d+(?:\.\d+)?)H)?"
                       r"(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?", re.IGNORECASE)


def _duration(text: str) -> timedelta | None:
    m = _DURATION.fullmatch(text.strip())
    if m is None or not any(m.groups()) or text.strip().upper().endswith("T"):
        return None
    weeks, days, hours, minutes, seconds = (float(g) if g else 0.0 for g in m.groups())
    return timedelta(weeks=weeks, days=days, hours=hours, minutes=minutes, seconds=seconds)


def parse_timespan(text: str, now: datetime) -> tuple[datetime, datetime]:
    """The [start, end] of an ISO 8601 `timespan`: `start/end`, `start/duration`,
    `duration/end`, or a duration ending now (what the SDK sends: `PT3600.0S`,
    `2026-12-01T00:00:00.000Z/PT86400.0S`). ValueError for anything else."""
    parts = text.strip().split("/")
    if len(parts) == 1:
        span = _duration(parts[0])
        if span is None:
            raise ValueError(text)
        return now - span, now
    if len(parts) != 2:
        raise ValueError(text)
    first, second = parts
    first_span, second_span = _duration(first), _duration(second)
    if first_span is not None and second_span is None:
        end = parse_datetime_literal(second)
        return end - first_span, end
    start = parse_datetime_literal(first)
    if second_span is not None:
        return start, start + second_span
    return start, parse_datetime_literal(second)


# --- running it ------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueryAnswer:
    """The primary table of an answer, and why it was cut short, if it was."""

    columns: tuple[str, ...]
    rows: list[list[Any]]
    truncated: str | None = None  # the engine's message when a limit cut the result
    scanned: int = 0

    def body(self, *, statistics: bool = False, elapsed: float = 0.0) -> dict[str, Any]:
        answer: dict[str, Any] = {"tables": [{
            "name": "PrimaryResult",
            "columns": [{"name": c, "type": COLUMN_TYPES[c]} for c in self.columns],
            "rows": self.rows,
        }]}
        if statistics:
            answer["statistics"] = {"query": {"executionTime": round(elapsed, 6),
                                              "datasetStatistics": [
                                                  {"tableRowCount": len(self.rows)}],
                                              "inputDatasetStatistics": {
                                                  "extents": {"scannedRows": self.scanned}}}}
        if self.truncated is not None:
            answer["error"] = {
                "code": "PartialError",
                "message": "There were some errors when processing your query.",
                "details": [{"code": "EngineError",
                             "message": "Something went wrong processing your query on the "
                                        "server.",
                             "innererror": {"code": "-2133196797", "message": self.truncated,
                                            "severity": 2, "severityName": "Error"}}],
            }
        return answer


def _cell(value: Any) -> Any:
    return kusto_time(value) if isinstance(value, datetime) else value


def run_query(query: Query, rows: Sequence[Row], *,
              window: tuple[datetime, datetime] | None = None,
              row_cap: int = 500_000, size_cap: int = 64 * 1024 * 1024) -> QueryAnswer:
    """Run a parsed pipeline over the table's rows (oldest first), within the request's
    `timespan` window if it had one, then cut the result to Log Analytics' limits."""
    current: list[Row] = list(rows)
    if window is not None:
        start, end = window
        current = [r for r in current if start <= r["TimeGenerated"] <= end]
    scanned = len(current)
    for step in query.steps:
        if isinstance(step, Where):
            current = [r for r in current if all(p(r) for p in step.predicates)]
        elif isinstance(step, Project):
            current = [{c: r[c] for c in step.columns} for r in current]
        elif isinstance(step, OrderBy):
            current = sorted(current, key=itemgetter(step.column), reverse=step.descending)
        else:
            current = current[:step.count]
    truncated = None
    if len(current) > row_cap:
        current = current[:row_cap]
        truncated = ("Query result set has exceeded the internal record count limit "
                     f"{row_cap} (E_QUERY_RESULT_SET_TOO_LARGE).")
    table: list[list[Any]] = []
    size = 0
    for r in current:
        cells = [_cell(r[c]) for c in query.columns]
        size += sum(len(str(v)) + 4 for v in cells)  # about what it costs as JSON
        if size > size_cap:
            truncated = ("Query result set has exceeded the internal data size limit "
                         f"{size_cap} (E_QUERY_RESULT_SET_TOO_LARGE).")
            break
        table.append(cells)
    return QueryAnswer(query.columns, table, truncated, scanned)


# --- the route -------------------------------------------------------------------------------


@dataclass
class _Request:
    query: str
    timespan: str | None
    prefer: set[str] = field(default_factory=set)


def _read_body(raw: bytes, prefer: str) -> _Request:
    try:
        body = json.loads(raw or b"null")
    except ValueError:
        raise bad_argument("The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise bad_argument("The request body must be a JSON object with 'query'.")
    query = body.get("query")
    if not isinstance(query, str):
        raise QueryError(400, "BadArgumentError", _BAD, [
            {"code": "QueryValidationError", "message": "'query' is required and is a string."}])
    timespan = body.get("timespan")
    if timespan is not None and not isinstance(timespan, str):
        raise bad_argument("'timespan' is an ISO 8601 interval or duration.")
    workspaces = body.get("workspaces")
    if workspaces:
        raise not_simulated("a cross-workspace query ('workspaces')")
    return _Request(query, timespan or None,
                    {p.strip().lower() for p in prefer.split(",") if p.strip()})


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return JSONResponse(body, status_code=status,
                        headers={"x-ms-request-id": str(uuid.uuid4())})


def _refuse(err: QueryError) -> Response:
    return _json(err.body(), err.status)


def query_workspace(ctx: SimContext, workspace_id: str, authorization: str | None,
                    raw_body: bytes, prefer: str = "") -> Response:
    """One `POST /v1/workspaces/{id}/query`: authenticate, find the workspace, authorize on
    it, parse, run and answer, or refuse as Log Analytics refuses."""
    began = time.monotonic()
    tenant = ctx.tenant
    try:
        try:
            caller = ctx.issuer.verify(authorization, LOG_ANALYTICS_AUDIENCES)
        except TokenError as exc:
            missing = not authorization or not authorization.lower().startswith("bearer ")
            raise QueryError(401, "AuthorizationRequiredError" if missing
                             else "InvalidTokenError",
                             "Valid authentication was not provided" if missing
                             else "The provided authentication is not valid for this resource",
                             [{"code": "InvalidToken", "message": str(exc)}]) from None
        with tenant.lock:
            workspace = tenant.workspace_by_customer_id(workspace_id)
            if workspace is None:
                raise QueryError(404, "WorkspaceNotFoundError", "The workspace could not be found")
            allowed = tenant.can(caller.object_id, QUERY_ACTION, workspace.id)
        if not allowed:
            raise QueryError(403, "InsufficientAccessError", (
                "The provided credentials have insufficient access to perform the requested "
                "operation"))
        request = _read_body(raw_body, prefer)
        query = parse_query(request.query)
        now = utcnow()
        window = None
        if request.timespan is not None:
            try:
                window = parse_timespan(request.timespan, now)
            except ValueError:
                raise QueryError(400, "BadArgumentError", _BAD, [{
                    "code": "InvalidTimespan",
                    "message": "'timespan' is not an ISO 8601 interval or duration "
                               "(e.g. PT1H, 2026-12-01T00:00:00Z/2026-12-02T00:00:00Z)."}],
                ) from None
        answer = answer_for(tenant, workspace, query, window, now)
    except QueryError as err:
        return _refuse(err)
    return _json(answer.body(statistics="include-statistics=true" in request.prefer,
                             elapsed=time.monotonic() - began))


def answer_for(tenant: Tenant, workspace: LogAnalyticsWorkspace, query: Query,
               window: tuple[datetime, datetime] | None, now: datetime) -> QueryAnswer:
    """A parsed query's answer from one workspace: its sign-in table if the diagnostic
    settings feed it, else the error Log Analytics gives for a table it does not have."""
    if not workspace.sign_in_logs:
        raise table_unknown(query.table, query.first_operator)
    return run_query(query, workspace_rows(tenant, now), window=window,
                     row_cap=tenant.log_analytics_row_cap,
                     size_cap=tenant.log_analytics_size_cap)


def routes(ctx: SimContext) -> list[BaseRoute]:
    async def query(request: Request) -> Response:
        return query_workspace(ctx, str(request.path_params["workspace_id"]),
                               request.headers.get("authorization"), await request.body(),
                               request.headers.get("prefer", ""))

    async def no_path(request: Request) -> Response:
        return _refuse(QueryError(404, "PathNotFoundError", "The requested path does not exist"))

    return [
        Route("/v1/workspaces/{workspace_id}/query", query, methods=["POST"]),
        Route("/v1/{rest:path}", no_path,
              methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]),
    ]

"""A hostile cloud on demand: ARM and Graph throttling, latency, injected errors, dropped links.

One ASGI middleware in front of every route, so the route modules stay about semantics. A
fault either refuses a request before it is handled (429, 500, 503, drop) or lets it be handled
and then loses the answer (500_after, drop_after), so a committed write looks failed. ARM
throttling follows AZURE-FACTS.md: token buckets per subscription and caller, reads 250 (+25/s),
writes 200 (+10/s), deletes 200 (+10/s); `x-ms-ratelimit-remaining-subscription-*` headers on
every answer and 429 with `Retry-After` when a bucket is empty. Graph throttling follows
Graph's identity limits: resource units per application and tenant (by the estate's
tenant.size) and write quotas, with Graph's 429 (see GRAPH_RESOURCE_UNITS). `throttle_scale`
multiplies sizes and rates (0 turns throttling off); `graph_throttle_scale`, Graph's alone.
Faults and throttling can be changed while the simulator runs (`POST /_sim/faults`, or
`SimServer.faults` in process).
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
import threading
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import jwt
from starlette.types import ASGIApp, Message, Receive, Scope, Send

Service = Literal["arm", "graph", "entra", "msi", "keyvault", "loganalytics"]
SERVICES: tuple[Service, ...] = ("arm", "graph", "entra", "msi", "keyvault", "loganalytics")
# The first four refuse a request before it is handled. The `_after` kinds handle it (a write is
# committed) and then lose the answer: a 500 in its place, or the connection cut. A client
# that retries such a write must find it already done, which is what the engine's idempotence
# is tested against (tests/integration/test_execute_faults.py).
FAULT_KINDS = ("429", "500", "503", "drop", "500_after", "drop_after")
AFTER_KINDS = ("500_after", "drop_after")

# (capacity, refill per second) of Azure's buckets.
ARM_BUCKETS = {"read": (250.0, 25.0), "write": (200.0, 10.0), "delete": (200.0, 10.0)}
# Microsoft Graph's identity and access limits (learn.microsoft.com/graph/throttling-limits,
# "Identity and access service limits"): resource units per application and tenant per 10 s
# by tenant size (S under 50 users, M up to 500, L above), and write quotas of 3,000 per
# application and tenant per 2 min 30 s and 18,000 per tenant per 5 min.
GRAPH_RESOURCE_UNITS = {"S": 3500.0, "M": 5000.0, "L": 8000.0}
GRAPH_WINDOW = 10.0
GRAPH_APP_WRITES = (3000.0, 3000.0 / 150.0)
GRAPH_TENANT_WRITES = (18000.0, 18000.0 / 300.0)
# "Identity and access reports" (auditLogs, sign-ins): 5 requests per 10 seconds per app and
# tenant, on top of the directory's resource units (learn.microsoft.com/graph/throttling-limits
# #identity-and-access-reports-service-limits).
GRAPH_REPORTS = (5.0, 5.0 / 10.0)
# Base resource-unit costs Graph lists for the paths the tool calls; any other costs 1, and
# every POST, PATCH, PUT or DELETE also costs one write.
_GRAPH_COSTS = [(re.compile(r"^applications$", re.IGNORECASE), 2),
                (re.compile(r"^servicePrincipals/[^/]+/appRoleAssignments$", re.IGNORECASE), 2)]


class FaultError(ValueError):
    """A fault specification that cannot be understood."""


@dataclass
class FaultRule:
    """A fault aimed at particular requests: the next `times` requests whose method is `method`
    ("*" for any) and whose path `path` (a regular expression) is found in get fault `kind`.
    Rules come before the random rates; a rule used up stays listed with `times` 0."""

    kind: str
    path: str = ""
    method: str = "*"
    times: int = 1

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise FaultError(f"fault kind {self.kind!r}: one of {', '.join(FAULT_KINDS)}")
        if self.times < 0:
            raise FaultError("a fault rule's times cannot be negative")
        try:
            self._pattern = re.compile(self.path)
        except re.error as exc:
            raise FaultError(f"fault rule path {self.path!r}: {exc}") from None
        self.method = self.method.upper()

    def matches(self, method: str, path: str) -> bool:
        return (self.times > 0 and self.method in ("*", method.upper())
                and self._pattern.search(path) is not None)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)  # the fields only: the compiled pattern is not one


@dataclass
class FaultConfig:
    """What the simulator does to requests besides answering them. Mutable at run time."""

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    rates: dict[str, dict[str, float]] = field(default_factory=dict)  # service -> kind -> p
    throttle_scale: float = 1.0
    graph_throttle_scale: float | None = None  # Graph's buckets alone; None: throttle_scale
    retry_after: float = 1.0  # seconds, for injected 429/503
    seed: int | None = None
    rules: list[FaultRule] = field(default_factory=list)

    @classmethod
    def from_cli(cls, specs: list[str], *, latency_ms: float = 0.0, jitter_ms: float = 0.0,
                 throttle_scale: float = 1.0) -> FaultConfig:
        config = cls(latency_ms=latency_ms, jitter_ms=jitter_ms, throttle_scale=throttle_scale)
        for spec in specs:
            m = re.fullmatch(r"(\w+):(\w+)=([0-9]*\.?[0-9]+)", spec.strip())
            if m is None:
                raise FaultError(f"fault {spec!r}: write SERVICE:KIND=RATE, e.g. arm:429=0.05")
            config.set_rate(m.group(1), m.group(2), float(m.group(3)))
        if latency_ms < 0 or jitter_ms < 0 or throttle_scale < 0:
            raise FaultError("latency, jitter and throttle scale cannot be negative")
        return config

    def set_rate(self, service: str, kind: str, rate: float) -> None:
        if service not in SERVICES:
            raise FaultError(f"fault service {service!r}: one of {', '.join(SERVICES)}")
        if kind not in FAULT_KINDS:
            raise FaultError(f"fault kind {kind!r}: one of {', '.join(FAULT_KINDS)}")
        if not 0.0 <= rate <= 1.0:
            raise FaultError(f"fault rate {rate} for {service}:{kind} is not between 0 and 1")
        self.rates.setdefault(service, {})[kind] = rate

    def take_rule(self, method: str, path: str) -> str | None:
        """The kind of the first rule that matches the request, which uses one of its times."""
        for rule in self.rules:
            if rule.matches(method, path):
                rule.times -= 1
                return rule.kind
        return None

    def update(self, changes: dict[str, Any]) -> None:
        """Apply a JSON patch from `POST /_sim/faults` all at once, or nothing if any of it is
        invalid; unknown keys are refused."""
        trial = FaultConfig(**{k: getattr(self, k) for k in (
            "latency_ms", "jitter_ms", "throttle_scale", "graph_throttle_scale", "retry_after",
            "seed")},
            rates={k: dict(v) for k, v in self.rates.items()}, rules=list(self.rules))
        trial._apply(changes)
        for key in ("latency_ms", "jitter_ms", "throttle_scale", "graph_throttle_scale",
                    "retry_after", "seed", "rates", "rules"):
            setattr(self, key, getattr(trial, key))

    def _apply(self, changes: dict[str, Any]) -> None:
        known = {"latency_ms", "jitter_ms", "throttle_scale", "graph_throttle_scale",
                 "retry_after", "seed", "rates", "rules"}
        # the tenant's delays, which admin.py applies
        unknown = set(changes) - known - {"replication_delay", "sign_in_delay"}
        if unknown:
            raise FaultError(f"unknown fault settings: {', '.join(sorted(unknown))}")
        for key in ("latency_ms", "jitter_ms", "throttle_scale", "retry_after"):
            if key in changes:
                value = float(changes[key])
                if value < 0:
                    raise FaultError(f"{key} cannot be negative")
                setattr(self, key, value)
        if "graph_throttle_scale" in changes:
            value = changes["graph_throttle_scale"]
            if value is not None and float(value) < 0:
                raise FaultError("graph_throttle_scale cannot be negative")
            self.graph_throttle_scale = None if value is None else float(value)
        if "seed" in changes:
            self.seed = None if changes["seed"] is None else int(changes["seed"])
        if "rates" in changes:
            self.rates = {}
            for service, kinds in dict(changes["rates"]).items():
                for kind, rate in dict(kinds).items():
                    self.set_rate(service, kind, float(rate))
        if "rules" in changes:
            rules = changes["rules"]
            if not isinstance(rules, list) or not all(isinstance(r, dict) for r in rules):
                raise FaultError("rules: a list of {kind, path, method, times} objects")
            try:
                self.rules = [FaultRule(**rule) for rule in rules]
            except TypeError as exc:
                raise FaultError(f"rules: {exc}") from None

    def as_json(self) -> dict[str, Any]:
        return {"latency_ms": self.latency_ms, "jitter_ms": self.jitter_ms,
                "rates": self.rates, "throttle_scale": self.throttle_scale,
                "graph_throttle_scale": self.graph_throttle_scale,
                "retry_after": self.retry_after, "seed": self.seed,
                "rules": [rule.as_json() for rule in self.rules]}


def graph_cost(method: str, path: str, query: str) -> tuple[int, int]:
    """(resource units, writes) a Graph request costs: the base cost of its path, less one
    for `$select` or a `$top` under 20, one more for `$expand`; never under 1."""
    rest = path.removeprefix("/v1.0/").removeprefix("/beta/").rstrip("/")
    units = 1
    if method.upper() == "GET":
        units = next((c for rx, c in _GRAPH_COSTS if rx.match(rest)), 1)
    params = {k.lower(): v for k, v in (
        p.split("=", 1) if "=" in p else (p, "") for p in query.split("&") if p)}
    top = params.get("%24top", params.get("$top", ""))
    units += ("%24expand" in params or "$expand" in params) \
        - ("%24select" in params or "$select" in params) \
        - (top.isdigit() and int(top) < 20)
    writes = 0 if method.upper() in ("GET", "HEAD") else 1
    return max(1, units), writes


class TokenBucket:
    def __init__(self, capacity: float, refill: float) -> None:
        self.capacity = capacity
        self.refill = refill
        self.tokens = capacity
        self.stamp = time.monotonic()

    def take(self, cost: float = 1.0) -> tuple[bool, float, float]:
        """(allowed, tokens left, seconds until `cost` tokens are back)."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.refill)
        self.stamp = now
        cost = min(cost, self.capacity)  # a bucket scaled below one request still serves it
        if self.tokens >= cost:
            self.tokens -= cost
            return True, self.tokens, 0.0
        wait = (cost - self.tokens) / self.refill if self.refill > 0 else 60.0
        return False, self.tokens, wait


class Throttle:
    """Buckets by (service, subscription, caller, kind); a bucket is rebuilt, full, when the
    scale it is asked for changes (ARM's and Graph's scales may differ)."""

    def __init__(self) -> None:
        self._buckets: dict[tuple[str, str, str, str], tuple[float, TokenBucket]] = {}
        self._lock = threading.Lock()

    def take(self, scale: float, key: tuple[str, str, str, str],
             size: tuple[float, float], cost: float = 1.0) -> tuple[bool, float, float]:
        with self._lock:
            found = self._buckets.get(key)
            if found is None or found[0] != scale:
                found = self._buckets[key] = (scale, TokenBucket(max(1.0, size[0] * scale),
                                                                 size[1] * scale))
            return found[1].take(cost)

    def reset(self) -> None:
        with self._lock:
            self._buckets.clear()


def service_of(path: str) -> Service | None:
    if path.startswith(("/v1.0/", "/beta/")) or path in ("/v1.0", "/beta"):
        return "graph"  # /beta serves what v1.0 lacks, such as auditLogs/signIns
    if path.startswith("/secrets/") or path == "/secrets":  # a vault's data plane (keyvault.py)
        return "keyvault"
    if path.startswith("/msi/"):
        return "msi"
    if path.startswith("/v1/") or path == "/v1":  # Log Analytics' query API (loganalytics.py)
        return "loganalytics"
    if path.startswith("/_sim") or path.startswith("/_sites") or path == "/":
        return None
    if "/oauth2/" in path or "/.well-known/" in path or "/discovery/" in path:
        return "entra"
    return "arm"


_SUB = re.compile(r"^/subscriptions/([^/?]+)", re.IGNORECASE)


def _caller_of(headers: list[tuple[bytes, bytes]], claim: str = "oid") -> str:
    """Who a request's token names (its `oid`, or another claim such as `appid`)."""
    for name, value in headers:
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            try:
                claims = jwt.decode(value[7:].decode(), options={"verify_signature": False})
                return str(claims.get(claim, "anonymous"))
            except jwt.PyJWTError:
                return "anonymous"
    return "anonymous"


def _kind(method: str) -> str:
    return {"GET": "read", "HEAD": "read", "DELETE": "delete"}.get(method, "write")


class FaultMiddleware:
    """Applies a FaultConfig and the throttling buckets to every request."""

    def __init__(self, app: ASGIApp, config: FaultConfig) -> None:
        self.app = app
        self.config = config
        self.throttle = Throttle()
        self.counts: dict[str, int] = {}  # what was injected, for tests and benchmarks
        # ARM requests answered (not refused) per (subscription, kind): a benchmark's input
        # for the lower bound the buckets allow.
        self.arm_requests: dict[tuple[str, str], int] = {}
        # The last requests that reached a service (method, path, whether a fault took them):
        # what a test reads to aim a FaultRule at each write a client makes. Bounded.
        self.requests: deque[tuple[str, str, str | None]] = deque(maxlen=10_000)
        self._random = random.Random()  # noqa: S311 - fault dice, not cryptography
        self._seed: int | None = None
        # Graph's resource-unit quota depends on the tenant's size (the estate's tenant.size)
        self.graph_tenant_size: Literal["S", "M", "L"] = "S"
        self.tenant_id = ""

    def _roll(self) -> float:
        if self.config.seed != self._seed:
            self._seed = self.config.seed
            self._random.seed(self._seed)
        return self._random.random()

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        service = service_of(path)
        if service is None:
            await self.app(scope, receive, send)
            return
        cfg = self.config
        delay = cfg.latency_ms + (self._roll() * cfg.jitter_ms if cfg.jitter_ms else 0.0)
        if delay > 0:
            await asyncio.sleep(delay / 1000.0)
        rates = cfg.rates.get(service, {})
        aimed = cfg.take_rule(scope["method"], path) if cfg.rules else None
        self.requests.append((scope["method"], path, aimed))
        for kind in FAULT_KINDS:
            rate = rates.get(kind, 0.0)
            if aimed == kind or (aimed is None and rate and self._roll() < rate):
                self._count(f"{service}:{kind}")
                if kind in AFTER_KINDS:
                    await self._lose_answer(scope, receive, send, kind)
                    return
                if kind == "drop":
                    _drop(receive)
                    return
                await self._error(send, service, int(kind), cfg.retry_after)
                return
        extra: list[tuple[bytes, bytes]] = []
        graph_scale = cfg.throttle_scale if cfg.graph_throttle_scale is None \
            else cfg.graph_throttle_scale
        if (service == "arm" and cfg.throttle_scale > 0) or (service == "graph"
                                                            and graph_scale > 0):
            # ARM counts per principal, Graph per application (and tenant)
            caller = _caller_of(scope["headers"], "oid" if service == "arm" else "appid")
            if service == "arm":
                m = _SUB.match(path)
                sub = m.group(1).lower() if m else "tenant"
                kind = _kind(scope["method"])
                ok, left, wait = self.throttle.take(cfg.throttle_scale,
                                                    ("arm", sub, caller, kind), ARM_BUCKETS[kind])
                header = f"x-ms-ratelimit-remaining-subscription-{kind}s".encode()
                extra.append((header, str(int(left)).encode()))
            else:
                ok, wait, kind = self._graph_take(graph_scale, caller, scope, extra)
            if not ok:
                self._count(f"{service}:throttled")
                await self._throttled(send, service, kind, wait, extra, caller)
                return
        if service == "arm":
            m = _SUB.match(path)
            key = (m.group(1).lower() if m else "tenant", _kind(scope["method"]))
            self.arm_requests[key] = self.arm_requests.get(key, 0) + 1

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start" and extra:
                message = dict(message)
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _graph_take(self, scale: float, caller: str, scope: Scope,
                    extra: list[tuple[bytes, bytes]]) -> tuple[bool, float, str]:
        """Charge a Graph request to its buckets: resource units per application and tenant,
        and for a write the application's and the tenant's write quotas. (allowed, seconds
        to wait, which limit refused it); `x-ms-resource-unit` says what it cost."""
        units, writes = graph_cost(scope["method"], scope["path"],
                                   scope.get("query_string", b"").decode("latin-1"))
        extra.append((b"x-ms-resource-unit", str(units).encode()))
        capacity = GRAPH_RESOURCE_UNITS[self.graph_tenant_size]
        ok, _, wait = self.throttle.take(scale, ("graph", "", caller, "units"),
                                         (capacity, capacity / GRAPH_WINDOW), units)
        if not ok:
            return False, wait, "ResourceUnitLimitExceeded"
        if scope["path"].startswith("/beta/auditLogs/"):
            ok, _, wait = self.throttle.take(scale, ("graph", "", caller, "reports"),
                                             GRAPH_REPORTS)
            if not ok:
                return False, wait, "ReportsLimitExceeded"
        for key, size in ((("graph", "", caller, "writes"), GRAPH_APP_WRITES),
                          (("graph", "", "tenant", "writes"), GRAPH_TENANT_WRITES)):
            if writes:
                ok, _, wait = self.throttle.take(scale, key, size, writes)
                if not ok:
                    return False, wait, "WriteLimitExceeded"
        return True, 0.0, ""

    async def _lose_answer(self, scope: Scope, receive: Receive, send: Send, kind: str) -> None:
        """Handle the request, then throw its answer away: what a client sees when a gateway
        fails or the network breaks after the service has committed a write."""

        async def swallow(message: Message) -> None:
            return None

        await self.app(scope, receive, swallow)
        if kind == "drop_after":
            _drop(receive)
            return
        service = service_of(scope["path"]) or "arm"
        await _respond(send, 500, _error_body(
            service, 500, "InternalServerError",
            "An internal error occurred after the request was handled (injected by "
            "migrator.sim)."), [(b"content-type", b"application/json")])

    async def _error(self, send: Send, service: str, status: int, retry_after: float) -> None:
        codes = {429: "TooManyRequests", 500: "InternalServerError", 503: "ServiceUnavailable"}
        message = {429: "Too many requests; retry later.",
                   500: "An internal error occurred (injected by migrator.sim).",
                   503: "The service is temporarily unavailable (injected by migrator.sim)."}
        body = _error_body(service, status, codes[status], message[status])
        headers = [(b"content-type", b"application/json")]
        if status in (429, 503):
            headers.append((b"retry-after", str(max(0, math.ceil(retry_after))).encode()))
        await _respond(send, status, body, headers)

    async def _throttled(self, send: Send, service: str, kind: str, wait: float,
                         extra: list[tuple[bytes, bytes]], caller: str) -> None:
        seconds = max(1, math.ceil(wait))
        headers = [(b"content-type", b"application/json"),
                   (b"retry-after", str(seconds).encode()), *extra]
        if service == "arm":
            body: dict[str, Any] = {"error": {
                "code": "SubscriptionRequestsThrottled",
                "message": (f"Number of '{kind}' requests for subscription exceeded. Please try "
                            f"again after '{seconds}' seconds after additional tokens are "
                            "available."),
            }}
        else:  # Graph's sample 429 (learn.microsoft.com/graph/throttling, "Sample response")
            rid = str(uuid.uuid4())
            body = {"error": {"code": "TooManyRequests", "message": "Please retry again later.",
                              "innerError": {
                                  "code": "429", "message": "Please retry after",
                                  "status": "429",
                                  "date": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()),
                                  "request-id": rid, "client-request-id": rid}}}
            limit = "Write" if kind == "WriteLimitExceeded" else "ReadWrite"
            headers += [(b"request-id", rid.encode()), (b"client-request-id", rid.encode()),
                        (b"x-ms-throttle-scope",
                         f"Tenant_Application/{limit}/{caller}/{self.tenant_id}".encode()),
                        (b"x-ms-throttle-information", kind.encode())]
        await _respond(send, 429, body, headers)


def _error_body(service: str, status: int, code: str, message: str) -> dict[str, Any]:
    """An error in the shape the service answers with. App Service's and Automation's
    managed-identity endpoint (IDENTITY_ENDPOINT) answers `{"statusCode", "message"}`: MSAL
    reads exactly those two (msal/managed_identity.py, _obtain_token_on_app_service)."""
    if service == "msi":
        return {"statusCode": status, "message": message}
    return {"error": {"code": code, "message": message}}


async def _respond(send: Send, status: int, body: dict[str, Any],
                   headers: list[tuple[bytes, bytes]]) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


def _drop(receive: Receive) -> None:
    """Abort the TCP connection without an answer, as a broken network path would.

    uvicorn's `receive` is a bound method of its request cycle, which holds the transport."""
    cycle = getattr(receive, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is not None:
        transport.abort()

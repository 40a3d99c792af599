"""Replay real Azure traffic against the simulator (issue 12, "Ground the simulator in real
recorded Azure traffic").

`tests/fixtures/recordings/*.json` hold requests and answers from the Azure CLI's public test
recordings (their README says how they were taken). Each file names an estate holding the
resources its requests address; its interactions are sent, in order and unchanged, to one
simulator started from that estate, signed in as the estate's operator. The simulator's answer
is compared with Azure's:

- the status code;
- the recursive key set of the JSON body and the JSON type at every path (a list's items merge
  into one `[]` segment);
- the casing of every resource id, as a value or as a map key: a difference only in case is
  reported as `id-case`, not as a missing and an extra key;
- the headers Azure sent (present or not; `content-type` by media type).

Every difference is either fixed in the simulator or allowed, with its reason, by
`tests/fixtures/recordings/allowed.yaml`, which also lists the operations the product calls that
no public recording holds. An allowance that no longer matches anything fails the test too, so
the list cannot rot. `python tests/integration/test_recordings.py` prints the figures: files,
interactions replayed, interactions matching exactly, allowed differences by kind.
"""

from __future__ import annotations

import fnmatch
import json
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import running_sim

pytestmark = pytest.mark.integration

RECORDINGS = Path(__file__).resolve().parent.parent / "fixtures" / "recordings"
ALLOWED = RECORDINGS / "allowed.yaml"
KINDS = ("status", "missing", "extra", "type", "id-case", "header")

# The operations the product calls, named as the recordings' `operation` field names them.
OPERATIONS = frozenset({
    # Microsoft.Web
    "sites.list", "sites.list_by_rg", "sites.get", "slots.list", "slots.get", "sites.identity",
    "appsettings.list", "appsettings.put", "connectionstrings.list", "connectionstrings.put",
    "slotconfignames.get", "slotconfignames.put", "config_web.get", "web.error",
    # Microsoft.ManagedIdentity and Microsoft.Authorization
    "uai.put", "uai.get", "uai.list", "uai.delete",
    "roleassignments.list", "roleassignments.put", "roleassignments.get",
    "roleassignments.delete", "roledefinitions.list", "roledefinitions.get",
    "authorization.error", "permissions.list",
    # Microsoft.KeyVault
    "vaults.get", "vaults.list", "accesspolicies.put", "vaults.put_policies", "keyvault.error",
    # Microsoft Graph
    "sp.filter", "sp.get", "app.filter", "app.get", "app.add_password", "app.remove_password",
    "sp.app_role_assignments.list", "sp.app_role_assignments.add",
    "sp.app_role_assignments.delete", "app.fic.list", "app.fic.create", "app.fic.delete",
    "app.owners", "graph.error",
    # Throttling, from either plane
    "throttle.429",
})

ARM_HOST = "management.azure.com"
GRAPH_HOST = "graph.microsoft.com"
AUDIENCES = {ARM_HOST: "https://management.azure.com/.default",
             GRAPH_HOST: "https://graph.microsoft.com/.default"}


# --- comparing one answer ----------------------------------------------------------------------


@dataclass(frozen=True)
class Difference:
    kind: str  # one of KINDS
    path: str  # a body path ("properties.siteConfig.linuxFxVersion"), a header name, or ""
    detail: str

    def line(self, interaction: str) -> str:
        return f"{interaction} | {self.kind} | {self.path or '-'} | {self.detail}"


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def shape(value: Any, path: str = "") -> dict[str, set[str]]:
    """Every path of a JSON value with the types seen there; list items share one `[]`."""
    found: dict[str, set[str]] = {}

    def walk(v: Any, at: str) -> None:
        found.setdefault(at, set()).add(json_type(v))
        if isinstance(v, dict):
            for key, item in v.items():
                walk(item, f"{at}.{key}" if at else str(key))
        elif isinstance(v, list):
            for item in v:
                walk(item, f"{at}[]")

    walk(value, path)
    return found


def _ids(value: Any, at: str = "") -> Iterator[tuple[str, str]]:
    """(path, value) of every string that is a resource id (an `id` key's value, or any string
    starting with /subscriptions/)."""
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{at}.{key}" if at else str(key)
            if isinstance(item, str) and (key == "id" or item.startswith("/subscriptions/")):
                yield here, item
            else:
                yield from _ids(item, here)
    elif isinstance(value, list):
        for n, item in enumerate(value):
            yield from _ids(item, f"{at}[{n}]")


def _media_type(value: str) -> str:
    return value.split(";", 1)[0].strip().lower()


def compare(recorded: dict[str, Any], status: int, headers: dict[str, str],
            body: Any) -> list[Difference]:
    """The differences between Azure's recorded answer and the simulator's."""
    out: list[Difference] = []
    if recorded["status"] != status:
        out.append(Difference("status", "", f"Azure {recorded['status']}, simulator {status}"))
    want, got = shape(recorded["body"]), shape(body)
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    # A key present on both sides but spelled in another case (a resource id used as a map key,
    # `resourcegroups` against `resourceGroups`) is one id-case difference, not a missing and an
    # extra key (nor one per key beneath it).
    extra_by_fold = {p.lower(): p for p in extra}
    folded: list[str] = []
    for path in list(missing):
        twin = extra_by_fold.get(path.lower())
        if twin is None:
            continue
        missing.remove(path)
        extra.remove(twin)
        if not any(path.lower().startswith(f"{done}.") for done in folded):
            folded.append(path.lower())
            out.append(Difference("id-case", path, f"simulator writes {twin}"))
    out += [Difference("missing", p, "Azure sends it, the simulator does not") for p in missing]
    out += [Difference("extra", p, "the simulator sends it, Azure does not") for p in extra]
    for path in sorted(set(want) & set(got)):
        if want[path] != got[path]:
            out.append(Difference("type", path, f"Azure {'/'.join(sorted(want[path]))}, "
                                                f"simulator {'/'.join(sorted(got[path]))}"))
    got_ids = dict(_ids(body))
    for path, value in _ids(recorded["body"]):
        mine = got_ids.get(path)
        if mine is not None and mine != value and mine.lower() == value.lower():
            out.append(Difference("id-case", path, f"Azure {value!r}, simulator {mine!r}"))
    sent = {k.lower(): v for k, v in headers.items()}
    for name, value in sorted((k.lower(), v) for k, v in recorded["headers"].items()):
        if name not in sent:
            out.append(Difference("header", name, "Azure sends it, the simulator does not"))
        elif name == "content-type" and _media_type(value) != _media_type(sent[name]):
            out.append(Difference("header", name, f"Azure {value!r}, simulator {sent[name]!r}"))
    return out


# --- the allow-list ----------------------------------------------------------------------------


@dataclass
class Allowance:
    interaction: str
    kind: str
    path: str
    reason: str
    # Paths the pattern would match that it must not allow: what the product reads.
    unless: tuple[str, ...] = ()
    used: int = 0

    def covers(self, interaction: str, difference: Difference) -> bool:
        return (self.kind == difference.kind
                and _matches(interaction, self.interaction)
                and _matches(difference.path, self.path)
                and not any(_matches(difference.path, u) for u in self.unless))


def _matches(text: str, pattern: str) -> bool:
    """fnmatch, with `[]` (a list's items in a body path) taken literally."""
    return fnmatch.fnmatchcase(text, pattern.replace("[]", "[[]]"))


@dataclass
class AllowList:
    allowances: list[Allowance]
    unrecorded: dict[str, str]  # operation -> why no interaction replays it

    @classmethod
    def load(cls, path: Path = ALLOWED) -> AllowList:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        allowances = []
        for entry in raw.get("differences", []):
            assert {"interaction", "kind", "path", "reason"} <= set(entry) <= {
                "interaction", "kind", "path", "reason", "unless"}, entry
            assert entry["kind"] in KINDS, entry
            assert str(entry["reason"]).strip(), f"an allowance needs its reason: {entry}"
            allowances.append(Allowance(entry["interaction"], entry["kind"], str(entry["path"]),
                                        entry["reason"], tuple(entry.get("unless", ()))))
        unrecorded = {str(k): str(v) for k, v in (raw.get("unrecorded") or {}).items()}
        return cls(allowances, unrecorded)

    def allowance_for(self, interaction: str, difference: Difference) -> Allowance | None:
        for allowance in self.allowances:
            if allowance.covers(interaction, difference):
                return allowance
        return None


# --- replaying ---------------------------------------------------------------------------------


@dataclass
class Replayed:
    name: str
    operation: str
    differences: list[Difference]
    allowed: list[Difference] = field(default_factory=list)
    refused: list[Difference] = field(default_factory=list)


def recording_files() -> list[Path]:
    return sorted(RECORDINGS.glob("*.json"))


def load_recording(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def replay_file(path: Path, state_dir: Path) -> list[Replayed]:
    data = load_recording(path)
    out: list[Replayed] = []
    with running_sim(RECORDINGS / data["estate"], state_dir) as sim:
        credential = sim.credential()
        tokens = {host: credential.get_token(scope).token for host, scope in AUDIENCES.items()}
        with sim.http() as http:
            for interaction in data["interactions"]:
                out.append(_replay_one(http, tokens, interaction))
    return out


def _replay_one(http: Any, tokens: dict[str, str],
                interaction: dict[str, Any]) -> Replayed:
    request = interaction["request"]
    parts = urlsplit(request["uri"])
    assert parts.hostname in tokens, f"{interaction['name']}: host {parts.hostname}"
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    body = request.get("body")
    headers = {"Authorization": f"Bearer {tokens[parts.hostname]}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    answer = http.request(request["method"], target, headers=headers,
                          content=None if body is None else json.dumps(body).encode())
    try:
        got = answer.json() if answer.content else None
    except ValueError:
        got = answer.text
    differences = compare(interaction["response"], answer.status_code, dict(answer.headers), got)
    return Replayed(interaction["name"], interaction["operation"], differences)


def judge(results: Iterable[Replayed], allow: AllowList) -> list[Replayed]:
    judged = list(results)
    for result in judged:
        result.allowed, result.refused = [], []
        for difference in result.differences:
            allowance = allow.allowance_for(result.name, difference)
            if allowance is None:
                result.refused.append(difference)
            else:
                allowance.used += 1
                result.allowed.append(difference)
    return judged


def summary(results: list[Replayed], files: int) -> str:
    kinds = Counter(d.kind for r in results for d in r.allowed)
    matching = sum(1 for r in results if not r.differences)
    lines = [f"recording files: {files}",
             f"interactions replayed: {len(results)}",
             f"matching exactly: {matching}",
             f"with allowed differences only: "
             f"{sum(1 for r in results if r.differences and not r.refused)}",
             f"with differences not allowed: {sum(1 for r in results if r.refused)}",
             f"allowed differences: {sum(kinds.values())} "
             f"({', '.join(f'{k} {kinds[k]}' for k in KINDS if kinds[k]) or 'none'})",
             f"operations replayed: {len({r.operation for r in results})} of {len(OPERATIONS)}"]
    return "\n".join(lines)


# --- the tests ---------------------------------------------------------------------------------


_REPLAYED: dict[str, list[Replayed]] = {}


def _replayed(path: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Replayed]:
    """Each file is replayed once per session, whichever test asks first."""
    if path.name not in _REPLAYED:
        _REPLAYED[path.name] = replay_file(path, tmp_path_factory.mktemp(path.stem))
    return _REPLAYED[path.name]


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> list[Replayed]:
    return [r for path in recording_files() for r in _replayed(path, tmp_path_factory)]


def test_every_file_is_well_formed() -> None:
    names: set[str] = set()
    files = recording_files()
    assert files, "no recordings"
    for path in files:
        data = load_recording(path)
        assert (RECORDINGS / data["estate"]).is_file(), f"{path.name}: no estate {data['estate']}"
        for n, interaction in enumerate(data["interactions"]):
            where = f"{path.name}[{n}]"
            assert interaction["name"] not in names, f"{where}: name given twice"
            names.add(interaction["name"])
            assert interaction["operation"] in OPERATIONS, f"{where}: {interaction['operation']}"
            assert interaction["recording"].startswith("src/azure-cli/"), where
            assert interaction["recording"].endswith(".yaml"), where
            assert len(interaction["commit"]) == 40, where
            assert isinstance(interaction["index"], int), where
            assert {"method", "uri"} <= set(interaction["request"]), where
            assert {"status", "headers", "body"} <= set(interaction["response"]), where


def test_no_secret_text_is_kept() -> None:
    """Passwords in the cassettes are placeholders, but none is committed here at all."""
    for path in recording_files():
        text = path.read_text(encoding="utf-8")
        for value in _values_named(json.loads(text), {"secretText", "secret", "clientSecret"}):
            assert value in (None, "<redacted>"), f"{path.name}: a secret value is kept"
        assert "AccountKey=" not in text.replace("AccountKey=<redacted>", ""), path.name


def _values_named(value: Any, names: set[str]) -> Iterator[Any]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key in names:
                yield item
            yield from _values_named(item, names)
    elif isinstance(value, list):
        for item in value:
            yield from _values_named(item, names)


def test_every_operation_the_product_calls_is_replayed_or_explained(
        replayed: list[Replayed]) -> None:
    allow = AllowList.load()
    seen = {r.operation for r in replayed}
    unexplained = sorted(OPERATIONS - seen - set(allow.unrecorded))
    assert not unexplained, f"operations with no recording and no reason: {unexplained}"
    stale = sorted(set(allow.unrecorded) & seen)
    assert not stale, f"listed as unrecorded but replayed: {stale}"
    assert set(allow.unrecorded) <= OPERATIONS, set(allow.unrecorded) - OPERATIONS


@pytest.mark.parametrize("path", recording_files(), ids=lambda p: p.stem)
def test_the_simulator_answers_as_azure_did(
        path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    allow = AllowList.load()
    results = judge(_replayed(path, tmp_path_factory), allow)
    refused = [d.line(r.name) for r in results for d in r.refused]
    assert not refused, "differences from Azure's recorded answers, neither fixed nor " \
        "allowed in allowed.yaml:\n" + "\n".join(refused)


def test_every_allowance_still_matches_a_difference(replayed: list[Replayed]) -> None:
    allow = AllowList.load()
    judge(replayed, allow)
    unused = [f"{a.interaction} | {a.kind} | {a.path}" for a in allow.allowances if not a.used]
    assert not unused, "allowances that match no difference any more:\n" + "\n".join(unused)


# The comparison itself: each kind of difference is caught (a harness that cannot fail would
# make every replay above pass).

AZURE = {"status": 200,
         "headers": {"content-type": "application/json; charset=utf-8", "location": "/x"},
         "body": {"id": "/subscriptions/s/resourcegroups/rg/providers/P/x", "n": 1,
                  "properties": {"a": "x", "ids": {"/subscriptions/s/resourcegroups/rg": {}}},
                  "list": [{"k": True}]}}


def test_compare_finds_nothing_in_an_identical_answer() -> None:
    assert compare(AZURE, 200, {"Content-Type": "application/json", "Location": "/x"},
                   AZURE["body"]) == []


def test_compare_finds_each_kind_of_difference() -> None:
    body = {"id": "/subscriptions/s/resourceGroups/rg/providers/P/x", "n": "1",
            "properties": {"b": 1, "ids": {"/subscriptions/s/resourceGroups/rg": {}}},
            "list": [{"k": True, "extra": None}]}
    found = {(d.kind, d.path) for d in compare(AZURE, 201, {"content-type": "text/plain"}, body)}
    assert found == {
        ("status", ""),
        ("missing", "properties.a"),
        ("extra", "properties.b"), ("extra", "list[].extra"),
        ("type", "n"),
        ("id-case", "id"),
        ("id-case", "properties.ids./subscriptions/s/resourcegroups/rg"),
        ("header", "content-type"), ("header", "location"),
    }


def test_an_allowance_covers_by_pattern_and_is_counted() -> None:
    allow = AllowList([Allowance("web: *", "missing", "properties.*", "presentation only")], {})
    results = judge([Replayed("web: get", "sites.get",
                              [Difference("missing", "properties.a", ""),
                               Difference("extra", "properties.a", "")])], allow)
    assert [d.kind for d in results[0].allowed] == ["missing"]
    assert [d.kind for d in results[0].refused] == ["extra"]
    assert allow.allowances[0].used == 1


def test_an_allowance_never_covers_what_it_excepts() -> None:
    allow = AllowList([Allowance("web: *", "missing", "*properties.*", "presentation only",
                                 unless=("*properties.defaultHostName",))], {})
    results = judge([Replayed("web: get", "sites.get",
                              [Difference("missing", "value[].properties.defaultHostName", ""),
                               Difference("missing", "value[].properties.webSpace", "")])],
                    allow)
    assert [d.path for d in results[0].refused] == ["value[].properties.defaultHostName"]


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        all_results: list[Replayed] = []
        for recording in recording_files():
            all_results += replay_file(recording, Path(scratch) / recording.stem)
    judged_results = judge(all_results, AllowList.load())
    print(summary(judged_results, len(recording_files())))
    for result in judged_results:
        for diff in result.refused:
            print("NOT ALLOWED", diff.line(result.name))

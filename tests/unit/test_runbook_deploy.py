"""The runbook's deployment: ARM template, Bicep twin, and the wheel set's packaging.

Nothing here talks to Azure. The template is checked the way a reviewer would, but
mechanically: every resource the runbook needs is there with the settings it depends on, every
`parameters()`/`variables()` reference and every `dependsOn` resolves (by evaluating the ARM
expressions involved with a small evaluator below), the scheduled job's parameters are argv
that the runbook's own parser accepts, and main.bicep declares the same resources. Packaging
is checked offline: the wheel-tag filter, the closure walk with CPython 3.10 markers, the
manifest, and the pip command a dry run prints.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import itertools
import json
import re
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

RUNBOOKS = Path(__file__).resolve().parents[2] / "runbooks"
TEMPLATE_PATH = RUNBOOKS / "azuredeploy.json"
BICEP_PATH = RUNBOOKS / "main.bicep"
PACKAGE_PY = RUNBOOKS / "package.py"

SUBSCRIPTION = "00000000-0000-4000-8000-000000000001"
RESOURCE_GROUP = "rg-msi-migrator"
RG_ID = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}"

BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
TABLE_DATA_CONTRIBUTOR = "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"

AUTOMATION = "Microsoft.Automation/automationAccounts"
REQUIRED_TYPES = {
    "Microsoft.Storage/storageAccounts",
    "Microsoft.Storage/storageAccounts/blobServices/containers",
    "Microsoft.Storage/storageAccounts/tableServices/tables",
    AUTOMATION,
    f"{AUTOMATION}/runtimeEnvironments",
    f"{AUTOMATION}/runtimeEnvironments/packages",
    f"{AUTOMATION}/runbooks",
    f"{AUTOMATION}/schedules",
    f"{AUTOMATION}/jobSchedules",
    "Microsoft.Authorization/roleAssignments",
}


def _load_package_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("runbook_package", PACKAGE_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


package = _load_package_module()


# --- a small evaluator for the ARM expressions the template uses ----------------------------

_TOKEN = re.compile(r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>-?\d+)"
                    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<punct>[(),.\[\]]))")

Node = tuple[Any, ...]


def parse_expression(text: str) -> Node:
    """Parse the inside of "[ ... ]" into nested tuples: ('lit', v), ('call', name, args),
    ('prop', node, name), ('index', node, node)."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        assert match, f"cannot tokenize {text[pos:]!r} in {text!r}"
        kind = match.lastgroup
        assert kind is not None
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    at = 0

    def peek() -> tuple[str, str] | None:
        return tokens[at] if at < len(tokens) else None

    def take(value: str | None = None) -> tuple[str, str]:
        nonlocal at
        token = tokens[at]
        assert value is None or token[1] == value, f"expected {value!r} in {text!r}"
        at += 1
        return token

    def expression() -> Node:
        kind, value = take()
        node: Node
        if kind == "str":
            node = ("lit", value[1:-1].replace("''", "'"))
        elif kind == "num":
            node = ("lit", int(value))
        elif kind == "name" and value in ("true", "false", "null"):
            node = ("lit", {"true": True, "false": False, "null": None}[value])
        elif kind == "name":
            take("(")
            args: list[Node] = []
            while peek() != ("punct", ")"):
                args.append(expression())
                if peek() == ("punct", ","):
                    take(",")
            take(")")
            node = ("call", value, args)
        else:
            raise AssertionError(f"unexpected {value!r} in {text!r}")
        while peek() in (("punct", "."), ("punct", "[")):
            if take()[1] == ".":
                node = ("prop", node, take()[1])
            else:
                node = ("index", node, expression())
                take("]")
        return node

    tree = expression()
    assert at == len(tokens), f"trailing tokens in {text!r}"
    return tree


def is_expression(text: str) -> bool:
    return text.startswith("[") and not text.startswith("[[") and text.endswith("]")


class Evaluator:
    """Evaluates the template's expressions for one set of parameter values."""

    def __init__(self, template: dict[str, Any], **parameters: Any) -> None:
        self.template = template
        self.overrides = parameters
        self.copy_index: int | None = None
        self.scopes: list[dict[str, Any]] = []

    def parameter(self, name: str) -> Any:
        if name in self.overrides:
            return self.overrides[name]
        return self.value(self.template["parameters"][name]["defaultValue"])

    def variable(self, name: str) -> Any:
        return self.value(self.template["variables"][name])

    def value(self, raw: Any) -> Any:
        """A template value with every expression in it (keys included) evaluated."""
        if isinstance(raw, dict):
            return {self.value(k): self.value(v) for k, v in raw.items()}
        if isinstance(raw, list):
            return [self.value(v) for v in raw]
        if isinstance(raw, str):
            if raw.startswith("[["):
                return raw[1:]
            if is_expression(raw):
                return self.node(parse_expression(raw[1:-1]))
        return raw

    def node(self, tree: Node) -> Any:
        kind = tree[0]
        if kind == "lit":
            return tree[1]
        if kind == "prop":
            return self.node(tree[1])[tree[2]]
        if kind == "index":
            return self.node(tree[1])[self.node(tree[2])]
        name, args = tree[1], tree[2]
        if name == "lambda":
            names = [self.node(a) for a in args[:-1]]
            body = args[-1]

            def call(*values: Any) -> Any:
                self.scopes.append(dict(zip(names, values, strict=True)))
                try:
                    return self.node(body)
                finally:
                    self.scopes.pop()
            return call
        values = [self.node(a) for a in args]
        return self.function(name)(*values)

    def function(self, name: str) -> Callable[..., Any]:
        functions: dict[str, Callable[..., Any]] = {
            "parameters": self.parameter,
            "variables": self.variable,
            "lambdaVariables": lambda n: next(s[n] for s in reversed(self.scopes) if n in s),
            "copyIndex": lambda *a: self.copy_index,
            "format": lambda fmt, *a: re.sub(r"\{(\d+)\}", lambda m: str(a[int(m[1])]), fmt),
            "concat": lambda *a: (list(itertools.chain.from_iterable(a))
                                  if isinstance(a[0], list) else "".join(str(x) for x in a)),
            "resourceGroup": lambda: {"id": RG_ID, "name": RESOURCE_GROUP,
                                      "location": "westeurope"},
            "environment": lambda: {"name": "AzureCloud",
                                    "suffixes": {"storage": "core.windows.net"}},
            "uniqueString": lambda *a: hashlib.sha256("|".join(a).encode()).hexdigest()[:13],
            "guid": lambda *a: str(uuid.uuid5(uuid.NAMESPACE_URL, "|".join(a))),
            "utcNow": lambda *a: "2026-01-01 00:00:00Z",
            "dateTimeAdd": lambda *a: "2026-01-01T01:00:00Z",
            "resourceId": lambda t, *n: resource_id(t, list(n)),
            "subscriptionResourceId": lambda t, *n: (
                f"/subscriptions/{SUBSCRIPTION}/providers/{t}/" + "/".join(n)),
            "extensionResourceId": lambda base, t, *n: f"{base}/providers/{t}/" + "/".join(n),
            "first": lambda x: x[0],
            "split": lambda s, d: s.split(d),
            "length": len,
            "empty": lambda x: len(x) == 0,
            "not": lambda x: not x,
            "and": lambda *a: all(a),
            "add": lambda a, b: a + b,
            "mul": lambda a, b: a * b,
            "createObject": lambda *a: dict(zip(a[::2], a[1::2], strict=True)),
            "union": lambda *a: functools.reduce(lambda x, y: {**x, **y}, a),
            "reduce": lambda items, start, fn: functools.reduce(fn, items, start),
        }
        assert name in functions, f"the test's evaluator does not know {name}()"
        return functions[name]


def resource_id(resource_type: str, names: list[str]) -> str:
    """The resource-group-level id ARM gives a resource of this type and name segments."""
    parts = resource_type.split("/")
    path = f"{RG_ID}/providers/{parts[0]}/{parts[1]}/{names[0]}"
    for child_type, child_name in zip(parts[2:], names[1:], strict=True):
        path += f"/{child_type}/{child_name}"
    return path


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    loaded = json.loads(TEMPLATE_PATH.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def resources(template: dict[str, Any], resource_type: str) -> list[dict[str, Any]]:
    return [r for r in template["resources"] if r["type"] == resource_type]


def one(template: dict[str, Any], resource_type: str) -> dict[str, Any]:
    found = resources(template, resource_type)
    assert len(found) == 1, f"{len(found)} resources of type {resource_type}"
    return found[0]


def deployed_ids(template: dict[str, Any], ev: Evaluator) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every resource's full id (copy loops expanded)."""
    for res in template["resources"]:
        count = ev.value(res["copy"]["count"]) if "copy" in res else 1
        for i in range(count):
            ev.copy_index = i
            names = ev.value(res["name"]).split("/")
            if "scope" in res:
                scope = ev.value(res["scope"])
                yield f"{RG_ID}/providers/{scope}/providers/{res['type']}/{names[0]}", res
            else:
                yield resource_id(res["type"], names), res
        ev.copy_index = None


def strings(value: Any) -> Iterator[str]:
    """Every string in a JSON value, keys included."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)
    elif isinstance(value, str):
        yield value


# --- the template ---------------------------------------------------------------------------


def test_template_is_a_deployment_template(template: dict[str, Any]) -> None:
    assert template["$schema"] == (
        "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#")
    assert template["contentVersion"] == "1.0.0.0"
    assert {"parameters", "variables", "resources", "outputs"} <= template.keys()


def test_template_has_every_resource_the_runbook_needs(template: dict[str, Any]) -> None:
    assert {r["type"] for r in template["resources"]} >= REQUIRED_TYPES


def test_storage_account_is_locked_down(template: dict[str, Any]) -> None:
    storage = one(template, "Microsoft.Storage/storageAccounts")
    assert storage["kind"] == "StorageV2"
    props = storage["properties"]
    assert props["supportsHttpsTrafficOnly"] is True
    assert props["minimumTlsVersion"] == "TLS1_2"
    assert props["allowBlobPublicAccess"] is False
    assert props["allowSharedKeyAccess"] is False  # Entra ID only: the identity has data roles
    container = one(template, "Microsoft.Storage/storageAccounts/blobServices/containers")
    assert container["properties"]["publicAccess"] == "None"
    ev = Evaluator(template)
    assert ev.value(container["name"]).endswith("/default/msi-migrator")
    table = one(template, "Microsoft.Storage/storageAccounts/tableServices/tables")
    assert ev.value(table["name"]).endswith("/default/migratorjournal")


def test_automation_account_has_a_system_assigned_identity(template: dict[str, Any]) -> None:
    account = one(template, AUTOMATION)
    assert account["identity"] == {"type": "SystemAssigned"}


def test_runtime_environment_is_python_310(template: dict[str, Any]) -> None:
    environment = one(template, f"{AUTOMATION}/runtimeEnvironments")
    assert environment["apiVersion"] == "2023-05-15-preview"
    assert environment["properties"]["runtime"] == {"language": "Python", "version": "3.10"}


def test_packages_are_the_wheels_under_packages_base_uri(template: dict[str, Any]) -> None:
    packages = one(template, f"{AUTOMATION}/runtimeEnvironments/packages")
    wheels = ["a_b-1.0-py3-none-any.whl", "c-2.0-cp310-cp310-manylinux_2_17_x86_64.whl"]
    ev = Evaluator(template, wheels=wheels, packagesBaseUri="https://host/w/",
                   artifactsSasToken="?sv=x", automationAccountName="aa",
                   runtimeEnvironmentName="py310")
    assert ev.value(packages["copy"]["count"]) == 2
    seen = []
    for i in range(2):
        ev.copy_index = i
        seen.append((ev.value(packages["name"]),
                     ev.value(packages["properties"]["contentLink"]["uri"])))
    assert seen == [("aa/py310/a_b", "https://host/w/a_b-1.0-py3-none-any.whl?sv=x"),
                    ("aa/py310/c", f"https://host/w/{wheels[1]}?sv=x")]


def test_runbook_is_python_in_that_runtime_environment(template: dict[str, Any]) -> None:
    runbook = one(template, f"{AUTOMATION}/runbooks")
    environment = one(template, f"{AUTOMATION}/runtimeEnvironments")
    ev = Evaluator(template, runbookScriptUri="https://host/r.py", artifactsSasToken="?s")
    assert runbook["properties"]["runbookType"] == "Python"
    assert ev.value(runbook["properties"]["runtimeEnvironment"]) == \
        ev.value(environment["name"]).split("/")[-1]
    assert ev.value(runbook["properties"]["publishContentLink"]["uri"]) == "https://host/r.py?s"


def test_schedule_is_daily(template: dict[str, Any]) -> None:
    schedule = one(template, f"{AUTOMATION}/schedules")
    props = schedule["properties"]
    assert props["frequency"] == "Day"
    assert props["interval"] == 1
    assert props["startTime"] == "[parameters('scheduleStartTime')]"


def test_job_schedule_links_that_schedule_and_that_runbook(template: dict[str, Any]) -> None:
    ev = Evaluator(template)
    link = one(template, f"{AUTOMATION}/jobSchedules")
    schedule = one(template, f"{AUTOMATION}/schedules")
    runbook = one(template, f"{AUTOMATION}/runbooks")
    assert ev.value(link["properties"]["schedule"]["name"]) == \
        ev.value(schedule["name"]).split("/")[-1]
    assert ev.value(link["properties"]["runbook"]["name"]) == \
        ev.value(runbook["name"]).split("/")[-1]
    ids = dict(deployed_ids(template, ev))
    dependencies = {ev.value(d) for d in link["dependsOn"]}
    assert {resource_id(schedule["type"], ev.value(schedule["name"]).split("/")),
            resource_id(runbook["type"], ev.value(runbook["name"]).split("/"))} <= dependencies
    assert dependencies - {"runtimePackages"} <= ids.keys()
    # A job schedule's name must be a GUID, and the same one on every deployment.
    name = ev.value(link["name"]).split("/")[-1]
    assert uuid.UUID(name)
    assert "guid(" in link["name"] and "utcNow" not in link["name"]


def job_argv(template: dict[str, Any], **parameters: Any) -> list[str]:
    """The job schedule's parameters as the sys.argv[1:] a Python runbook receives."""
    ev = Evaluator(template, storageAccountName="msimigacct", **parameters)
    link = one(template, f"{AUTOMATION}/jobSchedules")
    arguments = ev.value(link["properties"]["parameters"])
    positions = sorted(arguments, key=lambda k: int(re.fullmatch(r"\[PARAMETER (\d+)\]", k)[1]))
    assert [int(p.split()[1][:-1]) for p in positions] == list(range(1, len(positions) + 1))
    return [arguments[p] for p in positions]


def test_scheduled_job_runs_plan_mode_with_the_storage_it_was_given(
        template: dict[str, Any]) -> None:
    argv = job_argv(template)
    assert argv[0] == "plan"
    options = dict(zip(argv[1::2], argv[2::2], strict=True))
    assert options == {"--blob-url": "https://msimigacct.blob.core.windows.net",
                       "--table-url": "https://msimigacct.table.core.windows.net",
                       "--container": "msi-migrator", "--table": "migratorjournal",
                       "--plan-prefix": "nightly", "--cloud": "AzureCloud"}


def test_subscription_filter_becomes_repeated_options(template: dict[str, Any]) -> None:
    argv = job_argv(template, subscriptions=["prod", "3b8f0000-0000-4000-8000-000000000002"])
    assert argv[-4:] == ["--subscription", "prod",
                         "--subscription", "3b8f0000-0000-4000-8000-000000000002"]


def test_scheduled_argv_is_what_the_runbook_parses(template: dict[str, Any]) -> None:
    from migrator.runbook import parse_args

    args = parse_args(job_argv(template, subscriptions=["prod", "dev"]))
    assert args.mode == "plan"
    assert args.blob_url == "https://msimigacct.blob.core.windows.net"
    assert args.table_url == "https://msimigacct.table.core.windows.net"
    assert (args.container, args.table) == ("msi-migrator", "migratorjournal")
    assert args.subscription == ["prod", "dev"]


def test_role_assignments_give_the_identity_blob_and_table_data(
        template: dict[str, Any]) -> None:
    ev = Evaluator(template)
    assignments = resources(template, "Microsoft.Authorization/roleAssignments")
    roles = {ev.value(a["properties"]["roleDefinitionId"]).rsplit("/", 1)[-1]
             for a in assignments}
    assert roles == {BLOB_DATA_CONTRIBUTOR, TABLE_DATA_CONTRIBUTOR}
    account_id = resource_id(AUTOMATION, [ev.parameter("automationAccountName")])
    storage_id = resource_id("Microsoft.Storage/storageAccounts",
                             [ev.parameter("storageAccountName")])
    for assignment in assignments:
        props = assignment["properties"]
        assert props["principalType"] == "ServicePrincipal"
        assert f"{RG_ID}/providers/{ev.value(assignment['scope'])}" == storage_id
        # principalId = reference(<the Automation account>, …, 'full').identity.principalId
        tree = parse_expression(props["principalId"][1:-1])
        assert tree[0] == "prop" and tree[2] == "principalId"
        assert tree[1][0] == "prop" and tree[1][2] == "identity"
        call = tree[1][1]
        assert call[0] == "call" and call[1] == "reference"
        assert ev.node(call[2][0]) == account_id
        assert ev.node(call[2][-1]) == "full"


def test_outputs_name_the_identity_to_grant(template: dict[str, Any]) -> None:
    principal = template["outputs"]["principalId"]["value"]
    assert principal.endswith(".identity.principalId]")
    assert "reference(variables('automationAccountId')" in principal
    assert {"blobUrl", "tableUrl", "automationAccountId"} <= template["outputs"].keys()


def test_every_parameter_and_variable_reference_resolves(template: dict[str, Any]) -> None:
    text = json.dumps(template)
    used_parameters = set(re.findall(r"(?<![A-Za-z])parameters\('([^']+)'\)", text))
    used_variables = set(re.findall(r"(?<![A-Za-z])variables\('([^']+)'\)", text))
    assert used_parameters <= template["parameters"].keys()
    assert used_variables <= template["variables"].keys()
    # and nothing is declared for nothing
    assert template["parameters"].keys() <= used_parameters
    assert template["variables"].keys() <= used_variables


def test_every_expression_parses(template: dict[str, Any]) -> None:
    for text in strings(template):
        if is_expression(text):
            parse_expression(text[1:-1])


def test_every_depends_on_names_a_resource_in_the_template(template: dict[str, Any]) -> None:
    ev = Evaluator(template)
    ids = {rid for rid, _ in deployed_ids(template, ev)}
    copies = {r["copy"]["name"] for r in template["resources"] if "copy" in r}
    checked = 0
    for res in template["resources"]:
        for dependency in res.get("dependsOn", []):
            checked += 1
            if is_expression(dependency):
                assert ev.value(dependency) in ids, f"{res['type']}: {dependency}"
            else:
                assert dependency in copies, f"{res['type']}: {dependency}"
    assert checked >= 10


def test_resource_names_are_unique(template: dict[str, Any]) -> None:
    ev = Evaluator(template)
    ids = [rid for rid, _ in deployed_ids(template, ev)]
    assert len(ids) == len(set(ids))


def test_default_wheels_fit_the_sandbox(template: dict[str, Any]) -> None:
    wheels = template["parameters"]["wheels"]["defaultValue"]
    assert wheels, "the template names the wheels package.py produced"
    package.check_wheels(wheels)  # compatible tags, one wheel per distribution
    dists = {w.split("-", 1)[0] for w in wheels}
    assert {"msi_migrator", "azure_data_tables", "azure_storage_blob", "azure_identity",
            "msgraph_sdk"} <= dists
    assert "exceptiongroup" in dists  # a 3.10-only backport pip leaves out when run on 3.11+
    assert not dists & {"starlette", "uvicorn", "trustme"}


# --- the Bicep twin -------------------------------------------------------------------------


def bicep_text() -> str:
    return BICEP_PATH.read_text(encoding="utf-8")


def test_bicep_says_it_is_uncompiled_and_equivalent() -> None:
    head = bicep_text()[:800]
    assert "azuredeploy.json" in head and "NOT been compiled" in head


def test_bicep_declares_the_same_resources_and_api_versions(template: dict[str, Any]) -> None:
    declared = set(re.findall(r"^resource \w+ '([^'@]+)@([^']+)'", bicep_text(), re.M))
    assert declared == {(r["type"], r["apiVersion"]) for r in template["resources"]}


def test_bicep_declares_the_same_parameters_and_outputs(template: dict[str, Any]) -> None:
    text = bicep_text()
    assert set(re.findall(r"^param (\w+) ", text, re.M)) == template["parameters"].keys()
    assert set(re.findall(r"^output (\w+) ", text, re.M)) == template["outputs"].keys()
    wheels = re.search(r"^param wheels array = \[\n(.*?)^\]", text, re.M | re.S)
    assert wheels is not None
    assert re.findall(r"'([^']+)'", wheels[1]) == template["parameters"]["wheels"]["defaultValue"]


def test_bicep_grants_the_same_roles_to_a_service_principal() -> None:
    text = bicep_text()
    assert BLOB_DATA_CONTRIBUTOR in text and TABLE_DATA_CONTRIBUTOR in text
    assert text.count("principalType: 'ServicePrincipal'") == 2
    assert text.count("principalId: automation.identity.principalId") == 2
    assert "frequency: 'Day'" in text and "runbookType: 'Python'" in text
    assert "language: 'Python'" in text and "version: '3.10'" in text


# --- packaging ------------------------------------------------------------------------------


@pytest.mark.parametrize("filename", [
    "pydantic_core-2.50.5-cp310-cp310-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
    "pyyaml-6.0.4-cp310-cp310-manylinux_2_28_x86_64.whl",
    "frozenlist-1.8.0-cp310-cp310-manylinux1_x86_64.manylinux_2_5_x86_64.whl",
    "cryptography-50.0.2-cp39-abi3-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
    "cffi-2.1.1-cp310-abi3-manylinux_2_17_x86_64.whl",
    "msi_migrator-0.1.0-py3-none-any.whl",
    "six-1.17.0-py2.py3-none-any.whl",
    "azure_common-1.1.28-py2.py3-none-any.whl",
])
def test_wheel_filter_accepts_what_cpython_310_on_manylinux_installs(filename: str) -> None:
    assert package.is_sandbox_wheel(filename)


@pytest.mark.parametrize("filename", [
    "pydantic_core-2.50.5-cp311-cp311-manylinux_2_17_x86_64.whl",  # another interpreter
    "cryptography-50.0.2-cp311-abi3-manylinux_2_28_x86_64.whl",  # abi3, but from 3.11 on
    "pydantic_core-2.50.5-cp310-cp310-win_amd64.whl",
    "pydantic_core-2.50.5-cp310-cp310-macosx_11_0_arm64.whl",
    "pydantic_core-2.50.5-cp310-cp310-musllinux_1_2_x86_64.whl",
    "pydantic_core-2.50.5-cp310-cp310-manylinux_2_17_aarch64.whl",
    "pydantic_core-2.50.5-cp310-cp310-manylinux_2_34_x86_64.whl",  # newer glibc than assumed
    "pydantic_core-2.50.5-cp310-cp310-linux_x86_64.whl",  # not portable
    "pyyaml-6.0.4.tar.gz",
    "not-a-wheel.whl",
])
def test_wheel_filter_rejects_everything_else(filename: str) -> None:
    assert not package.is_sandbox_wheel(filename)


def test_check_wheels_refuses_two_versions_of_one_distribution() -> None:
    with pytest.raises(package.PackagingError, match="two wheels of anyio"):
        package.check_wheels(["anyio-4.0.0-py3-none-any.whl", "anyio-4.16.0-py3-none-any.whl"])
    with pytest.raises(package.PackagingError, match=re.escape("not a CPython 3.10")):
        package.check_wheels(["x-1-cp312-cp312-manylinux_2_17_x86_64.whl"])


def test_runbook_requirements_drop_the_simulators_server(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "x"\ndependencies = ["azure-identity>=1.19", '
                         '"Starlette>=0.37", "uvicorn>=0.29", "trustme>=1.1", '
                         '"PyJWT[crypto]>=2.8"]\n', encoding="utf-8")
    assert package.runbook_requirements(pyproject) == [
        "azure-identity>=1.19", "PyJWT[crypto]>=2.8", "azure-data-tables", "azure-storage-blob"]
    with_sim = package.runbook_requirements(pyproject, with_sim_deps=True)
    assert {"Starlette>=0.37", "uvicorn>=0.29", "trustme>=1.1"} <= set(with_sim)


def test_runbook_requirements_keep_a_declared_storage_sdk_once(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "x"\ndependencies = ["azure_data_tables>=12.5"]\n',
                         encoding="utf-8")
    assert package.runbook_requirements(pyproject) == [
        "azure_data_tables>=12.5", "azure-storage-blob"]


def test_runbook_requirements_read_the_real_pyproject() -> None:
    requirements = package.runbook_requirements(RUNBOOKS.parent / "pyproject.toml")
    names = {re.split(r"[<>=\[;]", r, maxsplit=1)[0].lower() for r in requirements}
    assert {"azure-identity", "msgraph-sdk", "azure-data-tables", "azure-storage-blob"} <= names
    assert not names & {"starlette", "uvicorn", "trustme"}


def _dist(name: str, version: str, *requires: str) -> Any:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version

    return package.Distribution(canonicalize_name(name), Version(version),
                                tuple(Requirement(r) for r in requires))


def test_closure_walk_finds_what_pip_skips_on_a_newer_python() -> None:
    available = {d.name: d for d in [
        _dist("anyio", "4.16.0", 'exceptiongroup>=1.0.2; python_version < "3.11"',
              "idna>=2.8", 'trio>=0.26; extra == "trio"'),
        _dist("idna", "3.20"),
        _dist("pyjwt", "2.15.1", 'cryptography>=3.4; extra == "crypto"'),
        _dist("aiohttp", "3.14.5", 'async-timeout<6.0,>=4.0; python_version < "3.11"',
              'colorama; sys_platform == "win32"'),
    ]}
    missing = package.missing_requirements(["anyio", "PyJWT[crypto]>=2.8", "aiohttp"], available)
    # 3.10 Linux markers: the backports are needed; Windows-only and unrequested extras are not.
    assert missing == ["async-timeout<6.0,>=4.0", "cryptography>=3.4", "exceptiongroup>=1.0.2"]


def test_closure_walk_refuses_a_wheel_that_breaks_a_specifier() -> None:
    available = {d.name: d for d in [_dist("anyio", "4.16.0", "idna>=4"), _dist("idna", "3.20")]}
    with pytest.raises(package.PackagingError, match=re.escape("idna 3.20 does not satisfy")):
        package.missing_requirements(["anyio"], available)


def _fake_wheel(directory: Path, filename: str, *requires: str) -> Path:
    path = directory / filename
    name, version = filename.split("-")[:2]
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{name}-{version}.dist-info/METADATA", metadata)
        archive.writestr(f"{name}/__init__.py", "")
    return path


def test_metadata_is_read_from_the_wheels(tmp_path: Path) -> None:
    _fake_wheel(tmp_path, "anyio-4.16.0-py3-none-any.whl",
                'exceptiongroup>=1.0.2; python_version < "3.11"')
    found = package.read_distributions(tmp_path)
    assert list(found) == ["anyio"]
    assert [str(r) for r in found["anyio"].requires] == [
        'exceptiongroup>=1.0.2; python_version < "3.11"']
    assert package.missing_requirements(["anyio"], found) == ["exceptiongroup>=1.0.2"]


def test_manifest_records_names_sizes_and_digests(tmp_path: Path) -> None:
    first = _fake_wheel(tmp_path, "idna-3.20-py3-none-any.whl")
    second = _fake_wheel(tmp_path, "pyyaml-6.0.4-cp310-cp310-manylinux_2_28_x86_64.whl")
    wheels = package.write_manifest(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["count"] == 2
    assert manifest["total_bytes"] == first.stat().st_size + second.stat().st_size
    assert manifest["wheels"][0] == {
        "name": first.name, "size": first.stat().st_size,
        "sha256": hashlib.sha256(first.read_bytes()).hexdigest()}
    assert [w.name for w in wheels] == [first.name, second.name]
    parameters = json.loads((tmp_path / "wheels.parameters.json").read_text())
    assert parameters["parameters"]["wheels"]["value"] == [first.name, second.name]
    # Written again over its own output, the manifest does not list itself.
    package.write_manifest(tmp_path)
    assert json.loads((tmp_path / "manifest.json").read_text())["count"] == 2


def test_manifest_refuses_a_stray_sdist(tmp_path: Path) -> None:
    _fake_wheel(tmp_path, "idna-3.20-py3-none-any.whl")
    (tmp_path / "pyyaml-6.0.4.tar.gz").write_bytes(b"sdist")
    with pytest.raises(package.PackagingError, match=re.escape("pyyaml-6.0.4.tar.gz")):
        package.write_manifest(tmp_path)


def test_a_non_empty_destination_is_refused_without_clean(tmp_path: Path) -> None:
    (tmp_path / "old-1.0-py3-none-any.whl").write_bytes(b"stale")
    assert package.main(["--dest", str(tmp_path)]) == 2
    assert (tmp_path / "old-1.0-py3-none-any.whl").exists()


def test_dry_run_prints_the_pip_commands_and_touches_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "wheels"
    completed = subprocess.run(
        [sys.executable, str(PACKAGE_PY), "--dest", str(dest), "--dry-run"],
        capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": "/usr/bin:/bin", "PIP_NO_INDEX": "1"})
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    build = next(line for line in lines if " -m pip wheel " in line)
    download = next(line for line in lines if " -m pip download " in line)
    assert "--no-deps" in build and str(RUNBOOKS.parent) in build
    for flag in ("--only-binary=:all:", "--platform manylinux2014_x86_64",
                 "--platform manylinux_2_17_x86_64", "--platform manylinux_2_28_x86_64",
                 "--python-version 3.10", "--implementation cp", "--abi cp310", "--abi abi3",
                 "--abi none", f"--dest {dest}"):
        assert flag in download, flag
    for requirement in ("azure-data-tables", "azure-storage-blob", "'msgraph-sdk>=1.20'"):
        assert requirement in download
    assert "starlette" not in download and "uvicorn" not in download
    assert not dest.exists()

"""Role-assignment conditions (Azure ABAC, conditionVersion 2.0), the subset the simulator
evaluates.

A condition narrows what its role assignment allows: Microsoft's example assigns Storage Blob
Data Reader with

    ((!(ActionMatches{'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read'}))
     OR (@Resource[Microsoft.Storage/storageAccounts/blobServices/containers:name]
         StringEquals 'blobs-example-container'))

so that blobs are read only in that container (azure-docs, role-based-access-control/
conditions-role-assignments-rest.md and conditions-format.md). A migration that copies the
assignment without its condition grants more than the principal had: the simulator enforces
conditions so that a test can prove a copy grants exactly as much.

Grammar (the documented format, less what no estate here needs):

    expression := term (OR term)*            term := factor (AND factor)*
    factor     := ('!' | NOT) factor | '(' expression ')'
                | ActionMatches{'pattern'} | SubOperationMatches{'name'}
                | attribute operator value
    attribute  := @Resource[...] | @Request[...] | @Principal[...] | @Environment[...]
    operator   := StringEquals | StringNotEquals | StringEqualsIgnoreCase
                | StringNotEqualsIgnoreCase | StringLike | StringNotLike
                | StringStartsWith | StringNotStartsWith
    value      := 'text' | {'text', 'text', ...}

Keywords are case-insensitive, as in Azure. The simulator knows two resource attributes, taken
from the scope the access is checked at: `…/blobServices/containers:name` and
`…/queueServices/queues:name`. Any other attribute is unknown, and a comparison on an unknown
attribute is false whatever the operator (harsher than Azure, never kinder); so is a
sub-operation. A condition that does not parse grants nothing.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass

from migrator.sim.rbac import action_matches

CONTAINER_NAME = "microsoft.storage/storageaccounts/blobservices/containers:name"
QUEUE_NAME = "microsoft.storage/storageaccounts/queueservices/queues:name"
_OPERATORS: dict[str, Callable[[str, str], bool]] = {
    "stringequals": lambda a, b: a == b,
    "stringnotequals": lambda a, b: a != b,
    "stringequalsignorecase": lambda a, b: a.lower() == b.lower(),
    "stringnotequalsignorecase": lambda a, b: a.lower() != b.lower(),
    "stringlike": fnmatch.fnmatchcase,
    "stringnotlike": lambda a, b: not fnmatch.fnmatchcase(a, b),
    "stringstartswith": lambda a, b: a.startswith(b),
    "stringnotstartswith": lambda a, b: not a.startswith(b),
}
_NEGATED = {"stringnotequals", "stringnotequalsignorecase", "stringnotlike",
            "stringnotstartswith"}
_TOKEN = re.compile(r"""
    \s*(?:
      (?P<open>\() | (?P<close>\)) | (?P<bang>!)
    | (?P<call>(?i:ActionMatches|SubOperationMatches))\s*\{\s*'(?P<call_arg>[^']*)'\s*\}
    | (?P<attr>@(?i:Resource|Request|Principal|Environment)\[(?P<attr_name>[^\]]+)\])
    | (?P<set>\{\s*'[^']*'(?:\s*,\s*'[^']*')*\s*\})
    | '(?P<text>[^']*)'
    | (?P<word>[A-Za-z]+)
    )""", re.VERBOSE)


class ConditionError(ValueError):
    """A condition outside the subset the simulator evaluates."""


@dataclass(frozen=True)
class Access:
    """What is being done, and where: the action and the resource attributes of the scope."""

    action: str
    attributes: dict[str, str]


Node = Callable[[Access], bool]


def resource_attributes(scope: str) -> dict[str, str]:
    """The resource attributes the simulator knows, from the resource id the access is at."""
    out: dict[str, str] = {}
    found = re.search(r"/blobServices/[^/]+/containers/([^/]+)", scope, re.IGNORECASE)
    if found:
        out[CONTAINER_NAME] = found.group(1)
    found = re.search(r"/queueServices/[^/]+/queues/([^/]+)", scope, re.IGNORECASE)
    if found:
        out[QUEUE_NAME] = found.group(1)
    return out


def parse(condition: str) -> Node:
    """The condition as a predicate over an access; ConditionError if it is not in the
    subset (the message says where)."""
    tokens = _tokens(condition)
    node, rest = _expression(tokens, 0)
    if rest != len(tokens):
        raise ConditionError(f"unexpected {tokens[rest][1]!r} in the condition")
    return node


def allows(condition: str | None, action: str, scope: str) -> bool:
    """Whether an assignment under `condition` allows `action` at `scope`: no condition
    allows; one that does not parse allows nothing."""
    if not condition:
        return True
    try:
        node = parse(condition)
    except ConditionError:
        return False
    return node(Access(action, resource_attributes(scope)))


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    position = 0
    text = text.strip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise ConditionError(f"cannot read the condition at {text[position:position + 30]!r}")
        kind = match.lastgroup or ""
        if kind in ("call_arg", "attr_name"):  # inner groups: report the outer one
            kind = "call" if match.group("call") else "attr"
        value = {"call": f"{match.group('call')}\0{match.group('call_arg')}",
                 "attr": match.group("attr_name") or "",
                 "text": match.group("text") or ""}.get(kind, match.group(kind) or "")
        out.append((kind, value))
        position = match.end()
        while position < len(text) and text[position].isspace():
            position += 1
    return out


def _expression(tokens: list[tuple[str, str]], at: int) -> tuple[Node, int]:
    node, at = _term(tokens, at)
    while at < len(tokens) and tokens[at][0] == "word" and tokens[at][1].lower() == "or":
        right, at = _term(tokens, at + 1)
        node = _either(node, right)
    return node, at


def _term(tokens: list[tuple[str, str]], at: int) -> tuple[Node, int]:
    node, at = _factor(tokens, at)
    while at < len(tokens) and tokens[at][0] == "word" and tokens[at][1].lower() == "and":
        right, at = _factor(tokens, at + 1)
        node = _both(node, right)
    return node, at


def _either(left: Node, right: Node) -> Node:
    return lambda access: left(access) or right(access)


def _both(left: Node, right: Node) -> Node:
    return lambda access: left(access) and right(access)


def _factor(tokens: list[tuple[str, str]], at: int) -> tuple[Node, int]:
    if at >= len(tokens):
        raise ConditionError("the condition ends too soon")
    kind, value = tokens[at]
    if kind == "bang" or (kind == "word" and value.lower() == "not"):
        inner, at = _factor(tokens, at + 1)
        return (lambda access: not inner(access)), at
    if kind == "open":
        inner, at = _expression(tokens, at + 1)
        if at >= len(tokens) or tokens[at][0] != "close":
            raise ConditionError("a '(' in the condition is not closed")
        return inner, at + 1
    if kind == "call":
        name, argument = value.split("\0", 1)
        if name.lower() == "actionmatches":
            return (lambda access: action_matches(argument, access.action)), at + 1
        return (lambda access: False), at + 1  # no sub-operations in the simulator
    if kind == "attr":
        if at + 2 >= len(tokens) or tokens[at + 1][0] != "word":
            raise ConditionError(f"the comparison on [{value}] in the condition is incomplete")
        operator = tokens[at + 1][1].lower()
        if operator not in _OPERATORS:
            raise ConditionError(f"operator {tokens[at + 1][1]!r} is not one the simulator "
                                 "evaluates")
        if tokens[at + 2][0] not in ("text", "set"):
            raise ConditionError(f"no value after {tokens[at + 1][1]} in the condition")
        values = _values(tokens[at + 2])
        return _compare(value.lower(), operator, values), at + 3
    raise ConditionError(f"unexpected {value!r} in the condition")


def _values(token: tuple[str, str]) -> tuple[str, ...]:
    kind, value = token
    if kind == "text":
        return (value,)
    return tuple(re.findall(r"'([^']*)'", value))


def _compare(attribute: str, operator: str, values: tuple[str, ...]) -> Node:
    test = _OPERATORS[operator]

    def node(access: Access) -> bool:
        found = access.attributes.get(attribute)
        if found is None:
            return False  # unknown here: never grants
        if operator in _NEGATED:
            return all(test(found, v) for v in values)
        return any(test(found, v) for v in values)

    return node

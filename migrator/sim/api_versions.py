"""The api-versions Azure Resource Manager accepts for each resource type the simulator serves.

ARM routes a request by its `api-version` and refuses one the resource provider has not
registered, before the provider sees it: 400 'NoRegisteredProviderFound', "No registered
resource provider found for location '…' and API version '…' for type '…'. The supported
api-versions are '…'. The supported locations are '…'." (role definitions:
Azure/azure-sdk-for-java#28334; role assignments: MicrosoftDocs/azure-docs#82469; Microsoft.Web:
Azure/azure-rest-api-specs#12005). Microsoft.Authorization is global: its locations are ''.
ARM's own types (subscriptions, resource groups, a subscription's resources) and versions that
are not dates get 'InvalidApiVersionParameter' instead: "The api-version '…' is invalid. The
supported versions are '…'." (Azure/azure-cli#28038, Azure/azure-sdk-for-net#3160).

The accepted versions (`api_versions.json`) are every version folder of the type's spec in
Azure/azure-rest-api-specs, plus the versions ARM itself listed as supported in those refusals
(ARM accepts some the specs never published). The simulator refuses anything else, as Azure
does, so an SDK upgrade that moves to an api-version nobody has checked the simulator's answers
against fails loudly in the tests instead of passing on a guess. `constraints.txt` pins the
SDKs the tests and the demo install; moving a pin means adding its api-version here after
reading what changed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache, cached_property
from importlib import resources
from typing import Any

from migrator.sim.state import SimError

# yyyy-mm-dd with an optional suffix, as ARM writes them: 2022-04-01, 2021-09-30-preview.
_FORMAT = re.compile(r"\d{4}-\d{2}-\d{2}(?:-[a-z]+)?", re.IGNORECASE)

# ARM's own resource types: refused with InvalidApiVersionParameter, not by a provider.
ARM_OWN = frozenset({"Microsoft.Resources/subscriptions", "Microsoft.Resources/resourceGroups",
                     "Microsoft.Resources/resources"})


@dataclass(frozen=True)
class ApiVersions:
    """Published api-versions per resource type ("Namespace/type")."""

    published: dict[str, tuple[str, ...]]

    @cached_property
    def _accepted(self) -> dict[str, frozenset[str]]:
        """Lower-cased, once: the check runs on every ARM request the simulator serves."""
        return {t: frozenset(v.lower() for v in vs) for t, vs in self.published.items()}

    def refusal(self, resource_type: str, version: str) -> SimError | None:
        """The error ARM answers for `version` of `resource_type`, or None if it is published."""
        if _FORMAT.fullmatch(version) and version.lower() in self._accepted[resource_type]:
            return None
        versions = self.published[resource_type]
        newest_first = sorted(versions, reverse=True)
        if resource_type in ARM_OWN or not _FORMAT.fullmatch(version):
            return SimError(400, "InvalidApiVersionParameter", (
                f"The api-version '{version}' is invalid. The supported versions are "
                f"'{','.join(newest_first)}'."))
        namespace, short_type = resource_type.split("/", 1)
        # The simulator serves one region; Microsoft.Authorization has none.
        location = "" if namespace == "Microsoft.Authorization" else "westeurope"
        return SimError(400, "NoRegisteredProviderFound", (
            f"No registered resource provider found for location '{location}' and API version "
            f"'{version}' for type '{short_type}'. The supported api-versions are "
            f"'{', '.join(newest_first)}'. The supported locations are '{location}'."))


@cache
def published() -> ApiVersions:
    raw: dict[str, Any] = json.loads(
        resources.files("migrator.sim").joinpath("api_versions.json").read_text("utf-8"))
    return ApiVersions({name: tuple(entry["versions"]) for name, entry in raw["types"].items()})

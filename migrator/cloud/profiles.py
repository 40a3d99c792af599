"""Cloud profiles: where ARM, Graph and Entra live, and how to trust them.

The public cloud, Azure China and US Government are built in; the simulator writes a profile
file of the same shape. Only the profile differs between Azure and `migrator.sim`: the code path
that talks to them is the same.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from migrator.cloud.errors import CloudConfigError


class CloudProfile(BaseModel):
    """Endpoints and trust settings of one Azure cloud."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    arm_endpoint: str  # e.g. https://management.azure.com
    arm_audience: str  # token audience, e.g. https://management.azure.com/
    graph_endpoint: str  # e.g. https://graph.microsoft.com (no /v1.0)
    graph_audience: str  # e.g. https://graph.microsoft.com
    authority: str  # Entra authority host, e.g. https://login.microsoftonline.com
    # Log Analytics' query API, where a workspace holding Entra's sign-in logs is read
    log_analytics_endpoint: str = "https://api.loganalytics.io"
    log_analytics_audience: str = "https://api.loganalytics.io"
    ca_bundle: str | None = None  # PEM file to trust instead of the system store
    disable_instance_discovery: bool = False
    tenant_id: str | None = None  # the simulator fills it in; Azure profiles leave it out
    # ARM's token buckets relative to Azure's (the simulator can scale them; 0: no throttling,
    # so the client does not pace).
    arm_throttle_scale: float = 1.0
    # Where an app's health path is probed after a settings swap. None (Azure): the site's
    # `https://{defaultHostName}`. A cloud whose apps are not reachable by host name (the
    # simulator) gives a template with the fields {site} (site name), {slot} (slot name or "")
    # and {slot_path} ("" or "/slots/<slot>"); the health path is appended to it, e.g.
    # "https://127.0.0.1:8443/_sites/{site}{slot_path}".
    site_url: str | None = None
    # azure-keyvault-secrets checks that a vault's challenge names a resource whose domain the
    # vault's host is under (vault.azure.net and the like). A cloud whose vaults are reached by
    # address (the simulator) turns the check off; Azure profiles keep it.
    key_vault_verify_challenge_resource: bool = True

    @field_validator("arm_endpoint", "graph_endpoint", "authority", "site_url",
                     "log_analytics_endpoint")
    @classmethod
    def _https_only(cls, value: str | None) -> str | None:
        """Every endpoint gets a bearer token (or, the authority, a client secret): Azure
        serves them over TLS only, and azure-core and azure-identity refuse plain http deep
        inside a call. Say so when the profile is read, naming the URL."""
        if value is None:
            return None
        parts = urlsplit(value.strip())
        if parts.scheme.lower() != "https" or not parts.hostname:
            raise ValueError(f"{_shown(value)} is not an https:// URL (endpoints receive "
                             "bearer tokens, which are sent over TLS only)")
        return value

    @property
    def arm_scope(self) -> str:
        return self.arm_audience.rstrip("/") + "/.default"

    @property
    def graph_scope(self) -> str:
        return self.graph_audience.rstrip("/") + "/.default"

    @property
    def log_analytics_scope(self) -> str:
        return self.log_analytics_audience.rstrip("/") + "/.default"

    @property
    def graph_base_url(self) -> str:
        return self.graph_endpoint.rstrip("/") + "/v1.0"

    @property
    def graph_host(self) -> str:
        return self.graph_endpoint.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]


def _shown(url: str) -> str:
    """A URL fit for a message: without user:password@ (a secret, if anyone put one there),
    on one line, at most 200 characters."""
    text = " ".join(url.split())
    parts = urlsplit(text)
    if "@" in parts.netloc:
        text = urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
    return text if len(text) <= 200 else text[:199] + "…"


PUBLIC = CloudProfile(
    name="AzureCloud",
    arm_endpoint="https://management.azure.com",
    arm_audience="https://management.azure.com/",
    graph_endpoint="https://graph.microsoft.com",
    graph_audience="https://graph.microsoft.com",
    authority="https://login.microsoftonline.com",
)
CHINA = CloudProfile(
    name="AzureChinaCloud",
    arm_endpoint="https://management.chinacloudapi.cn",
    arm_audience="https://management.chinacloudapi.cn/",
    graph_endpoint="https://microsoftgraph.chinacloudapi.cn",
    graph_audience="https://microsoftgraph.chinacloudapi.cn",
    authority="https://login.chinacloudapi.cn",
    log_analytics_endpoint="https://api.loganalytics.azure.cn",
    log_analytics_audience="https://api.loganalytics.azure.cn",
)
US_GOVERNMENT = CloudProfile(
    name="AzureUSGovernment",
    arm_endpoint="https://management.usgovcloudapi.net",
    arm_audience="https://management.usgovcloudapi.net/",
    graph_endpoint="https://graph.microsoft.us",
    graph_audience="https://graph.microsoft.us",
    authority="https://login.microsoftonline.us",
    log_analytics_endpoint="https://api.loganalytics.us",
    log_analytics_audience="https://api.loganalytics.us",
)
BUILTIN: dict[str, CloudProfile] = {
    p.name.lower(): p for p in (PUBLIC, CHINA, US_GOVERNMENT)
} | {"public": PUBLIC, "china": CHINA, "usgov": US_GOVERNMENT}


def load_profile(name_or_path: str) -> CloudProfile:
    """A built-in cloud by name (`AzureCloud`, `china`, …) or a profile file by path."""
    builtin = BUILTIN.get(name_or_path.lower())
    if builtin is not None:
        return builtin
    path = Path(name_or_path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        known = ", ".join(p.name for p in (PUBLIC, CHINA, US_GOVERNMENT))
        raise CloudConfigError(
            f"{name_or_path}: no such cloud profile file, and not a built-in cloud ({known})"
        ) from None
    except (OSError, ValueError) as exc:
        raise CloudConfigError(f"{path}: not a readable JSON profile: {exc}") from None
    try:
        return CloudProfile.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "<top>"
        message = str(err["msg"]).removeprefix("Value error, ")
        raise CloudConfigError(f"{path}: {where}: {message}") from None


def write_profile(profile: CloudProfile, path: Path) -> None:
    path.write_text(profile.model_dump_json(indent=2) + "\n", encoding="utf-8")

"""Adapter for subscriptions and Microsoft.Web: sites, slots and their settings' names.

Returns `records` dataclasses; SDK models stop here. Setting *values* are not returned by
`setting_names`: callers that need values (the detector) get them through a dedicated call.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Protocol, TypeVar
from urllib.parse import quote

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)

from migrator.cloud.errors import AzureCallError, SignInError, UntrustedEndpoint
from migrator.cloud.factory import ClientFactory
from migrator.cloud.records import IdentityRecord, SettingsRecord, SiteRecord, SubscriptionRecord

T = TypeVar("T")
RESOURCES_API_VERSION = "2021-04-01"


def call_error(what: str, exc: HttpResponseError) -> AzureCallError:
    """One line from an SDK error: status, ARM error code and the first line of its message."""
    code = getattr(getattr(exc, "error", None), "code", None)
    message = getattr(getattr(exc, "error", None), "message", None)
    if not code:
        code, message = _web_error(exc) or (None, message)
    message = message or exc.reason or ""
    first = next((line for line in str(message or exc).splitlines() if line.strip()), "")
    return AzureCallError(what, exc.status_code, code, first)


def _web_error(exc: HttpResponseError) -> tuple[str | None, str | None] | None:
    """Code and message of an error in Microsoft.Web's own shape (`{"Code": …, "Message": …,
    "Details": [...]}`, no `error` wrapper), which azure-core does not parse: App Service
    answers its own refusals so."""
    try:
        body = json.loads(exc.response.text()) if exc.response is not None else None
    except (ValueError, TypeError, AttributeError):
        return None
    if not isinstance(body, dict):
        return None
    fields = {str(k).lower(): v for k, v in body.items()}
    code, message = fields.get("code"), fields.get("message")
    if not isinstance(code, str) and not isinstance(message, str):
        return None
    return (code if isinstance(code, str) else None,
            message if isinstance(message, str) else None)


def sign_in_reason(exc: ClientAuthenticationError) -> str:
    """The one line of azure-identity's (often multi-line) message that says why: Entra's
    AADSTS error if there is one; that no credential was found at all; else, in a credential
    chain's list, the credential that tried and failed (the chain stops there: the last)."""
    from migrator.cloud.factory import NO_CREDENTIAL, NoCredentialFound, chain_attempts

    if isinstance(exc, NoCredentialFound):
        return NO_CREDENTIAL
    text = str(exc.message or exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if "AADSTS" in line:
            return line.split(" Trace ID:")[0]
    attempts = chain_attempts(text)
    if attempts:
        return attempts[-1][:300]
    endpoint = _MSI_ANSWER.search(text)
    if endpoint is not None:  # not "configuration not found", which azure-identity puts first
        return (f"the managed-identity endpoint answered {endpoint.group(1)}: "
                f"{endpoint.group(2).strip()}")[:300]
    return (lines[0] if lines else "no credential could sign in")[:300]


def connection_error(what: str, exc: ServiceRequestError | ServiceResponseError
                     ) -> AzureCallError:
    """A request that got no answer: the connection could not be made, or broke before the
    answer came. azure-core resends only idempotent methods, so a POST or PATCH (Microsoft.Web's
    `config/appsettings/list`, an identity PATCH) reaches here after one drop. Transient, with
    no status; whether a write was committed is unknown, which the executor's verify decides."""
    cause = exc.inner_exception if exc.inner_exception is not None else exc
    detail = next((line for line in str(cause).splitlines() if line.strip()), "no answer")
    if "CERTIFICATE_VERIFY_FAILED" in detail:
        return UntrustedEndpoint(what, None, "CertificateVerifyFailed",
                                 "the endpoint's TLS certificate is not trusted (check "
                                 "REQUESTS_CA_BUNDLE or the cloud profile's ca_bundle)")
    return AzureCallError(what, None, type(exc).__name__,
                          f"the connection failed: {detail[:200]}")


# What azure-identity says when the token endpoint could not be reached or answered with a
# throttle or a server error: "Authentication failed: HTTP Error: 503", "('Connection aborted.',
# RemoteDisconnected(...))" (probed against migrator.sim's entra and msi faults). A managed
# identity's endpoint (App Service, Automation) that answers 5xx reaches us through MSAL as
# "... Token request error: (invalid_scope) 503, <message>": MSAL names every such answer
# invalid_scope and puts the body's statusCode after it (msal/managed_identity.py).
_TRANSIENT_SIGN_IN = re.compile(
    r"HTTP Error: (?:429|5\d\d)\b|\(invalid_scope\) (?:429|5\d\d),|Connection aborted|"
    r"RemoteDisconnected|Connection reset|Max retries exceeded|timed out|"
    r"Temporary failure in name resolution", re.IGNORECASE)


_MSI_ANSWER = re.compile(r"Token request error: \(invalid_scope\) (\w+), (.*)")


def sign_in_error(what: str | None, exc: ClientAuthenticationError) -> SignInError:
    """The one-line SignInError for a failed token request, transient when Entra could not be
    reached or was busy, not when it refused (an AADSTS error) or nothing could sign in."""
    from migrator.cloud.factory import NoCredentialFound

    text = str(exc.message or exc)
    transient = (not isinstance(exc, NoCredentialFound) and "AADSTS" not in text
                 and _TRANSIENT_SIGN_IN.search(text) is not None)
    prefix = f"{what}: " if what else ""
    return SignInError(f"{prefix}sign-in failed: {sign_in_reason(exc)}", transient=transient)


def arm_call(what: str, call: Callable[[], T]) -> T:
    """Run one SDK call, turning its failures into the cloud layer's typed errors."""
    try:
        return call()
    except ClientAuthenticationError as exc:
        raise sign_in_error(what, exc) from None
    except HttpResponseError as exc:
        raise call_error(what, exc) from None
    except (ServiceRequestError, ServiceResponseError) as exc:
        raise connection_error(what, exc) from None


def _identity(identity: object | None) -> IdentityRecord:
    if identity is None:
        return IdentityRecord("None", None, ())
    kind = getattr(identity, "type", None)
    kind_text = str(getattr(kind, "value", kind) or "None")
    uai = getattr(identity, "user_assigned_identities", None) or {}
    held = tuple(sorted(
        (str(rid).lower(), str(principal).lower()) for rid, value in uai.items()
        if (principal := getattr(value, "principal_id", None))))
    return IdentityRecord(kind_text, getattr(identity, "principal_id", None), tuple(sorted(uai)),
                          held)


def _site(subscription_id: str, site: object, slot_of: str | None = None) -> SiteRecord:
    name = str(getattr(site, "name", ""))
    slot = None
    if slot_of is not None:
        slot = name.split("/", 1)[1] if "/" in name else name
        name = slot_of
    return SiteRecord(
        id=str(getattr(site, "id", "")), subscription_id=subscription_id,
        resource_group=str(getattr(site, "resource_group", "") or ""),
        name=name, slot=slot, kind=str(getattr(site, "kind", "") or "app"),
        identity=_identity(getattr(site, "identity", None)),
        key_vault_reference_identity=getattr(site, "key_vault_reference_identity", None),
        location=str(getattr(site, "location", "") or ""),
        outbound_ips=_addresses(site),
    )


def _addresses(site: object) -> tuple[str, ...]:
    """The site's outbound addresses, current and possible, in Azure's order, once each."""
    found: dict[str, None] = {}
    for field in ("outbound_ip_addresses", "possible_outbound_ip_addresses"):
        for ip in str(getattr(site, field, "") or "").split(","):
            if ip.strip():
                found.setdefault(ip.strip(), None)
    return tuple(found)


class SiteLike(Protocol):
    """What names a site or slot: a scanned SiteRecord or a parsed SiteAddress."""

    @property
    def subscription_id(self) -> str: ...
    @property
    def resource_group(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def slot(self) -> str | None: ...
    @property
    def display(self) -> str: ...


def read_app_settings(factory: ClientFactory, site: SiteLike) -> dict[str, str]:
    """A site's (or slot's) app settings, values included: for the detector and the stash
    only, never for logs."""
    web = factory.web(site.subscription_id)
    rg, name, slot = site.resource_group, site.name, site.slot
    what = f"read app settings of {site.display}"
    if slot:
        found = arm_call(what, lambda: web.web_apps.list_application_settings_slot(
            rg, name, slot))
    else:
        found = arm_call(what, lambda: web.web_apps.list_application_settings(rg, name))
    return {str(k): str(v) for k, v in (found.properties or {}).items()}


def read_connection_strings(factory: ClientFactory, site: SiteLike
                            ) -> dict[str, tuple[str, str]]:
    """A site's (or slot's) connection strings, name -> (type, value); values are secrets."""
    web = factory.web(site.subscription_id)
    rg, name, slot = site.resource_group, site.name, site.slot
    what = f"read connection strings of {site.display}"
    if slot:
        found = arm_call(what, lambda: web.web_apps.list_connection_strings_slot(
            rg, name, slot))
    else:
        found = arm_call(what, lambda: web.web_apps.list_connection_strings(rg, name))
    return {str(k): (enum_text(v.type or "Custom"), str(v.value or ""))
            for k, v in (found.properties or {}).items()}


def enum_text(value: object) -> str:
    """An SDK enum member's wire value (str() of one is its class and member name)."""
    return str(getattr(value, "value", value))


class WebAdapter:
    """Reads subscriptions, sites and slots for one signed-in operator."""

    def __init__(self, factory: ClientFactory) -> None:
        self.factory = factory

    def subscriptions(self) -> list[SubscriptionRecord]:
        client = self.factory.subscriptions()
        return arm_call("list subscriptions", lambda: [
            SubscriptionRecord(str(s.subscription_id), str(s.display_name),
                               str(s.tenant_id or ""))
            for s in client.subscriptions.list()
        ])

    def sites(self, subscription_id: str) -> list[SiteRecord]:
        """Every site the operator can read in a subscription, each followed by its slots."""
        web = self.factory.web(subscription_id)
        out: list[SiteRecord] = []

        def read() -> None:
            for site in web.web_apps.list():
                record = _site(subscription_id, site)
                out.append(record)
                for slot in web.web_apps.list_slots(record.resource_group, record.name):
                    out.append(_site(subscription_id, slot, slot_of=record.name))

        arm_call(f"list sites in subscription {subscription_id}", read)
        return out

    def setting_names(self, site: SiteRecord) -> tuple[list[str], list[str]]:
        """Names of a site's app settings and connection strings (values stay in Azure)."""
        return (sorted(read_app_settings(self.factory, site)),
                sorted(read_connection_strings(self.factory, site)))

    def settings(self, site: SiteRecord,
                 sticky: tuple[frozenset[str], frozenset[str]] | None = None) -> SettingsRecord:
        """A site's app settings, connection strings and slot-sticky names, values included:
        for the detector only; callers never log or keep them. The sticky names belong to the
        site, not the slot: pass the production site's (`SettingsRecord.sticky`) to save a read
        per slot."""
        if sticky is None:
            web = self.factory.web(site.subscription_id)
            names = arm_call(f"read slot settings of {site.name}", lambda:
                             web.web_apps.list_slot_configuration_names(site.resource_group,
                                                                        site.name))
            sticky = (frozenset(names.app_setting_names or ()),
                      frozenset(names.connection_string_names or ()))
        return SettingsRecord(
            app_settings=read_app_settings(self.factory, site),
            connection_strings=read_connection_strings(self.factory, site),
            sticky_app_settings=sticky[0],
            sticky_connection_strings=sticky[1],
        )

    def resource_group_exists(self, subscription_id: str, name: str) -> bool:
        """Whether a resource group exists in a subscription: `GET .../resourcegroups/{name}`
        (Microsoft.Resources, api-version 2021-04-01) answers 404 `ResourceGroupNotFound` when
        it does not. Sent through the Web client's pipeline (sign-in, retries, pacing): the
        project has no other use for azure-mgmt-resource."""
        from azure.core.rest import HttpRequest
        from azure.mgmt.core.exceptions import ARMErrorFormat

        what = f"read resource group {name} in subscription {subscription_id}"
        web = self.factory.web(subscription_id)
        request = HttpRequest("GET", f"/subscriptions/{quote(subscription_id, safe='')}"
                                     f"/resourcegroups/{quote(name, safe='')}",
                              params={"api-version": RESOURCES_API_VERSION})

        def read() -> bool:
            response = web.send_request(request)
            if response.status_code == 200:
                return True
            error = HttpResponseError(response=response, error_format=ARMErrorFormat)
            if response.status_code == 404 and getattr(error.error, "code", None) in (
                    "ResourceGroupNotFound", None):
                return False
            raise error

        return arm_call(what, read)

    def site_list(self, subscription_id: str) -> list[SiteRecord]:
        """Production sites only (no slots): one paged list call."""
        web = self.factory.web(subscription_id)
        return arm_call(f"list sites in subscription {subscription_id}",
                        lambda: [_site(subscription_id, s) for s in web.web_apps.list()])

    def slots(self, site: SiteRecord) -> list[SiteRecord]:
        web = self.factory.web(site.subscription_id)
        return arm_call(f"list slots of {site.name}", lambda: [
            _site(site.subscription_id, s, slot_of=site.name)
            for s in web.web_apps.list_slots(site.resource_group, site.name)])

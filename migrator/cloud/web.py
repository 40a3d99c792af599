"""Adapter for subscriptions and Microsoft.Web: sites, slots and their settings' names.

Returns `records` dataclasses; SDK models stop here. Setting *values* are not returned by
`setting_names`: callers that need values (the detector) get them through a dedicated call.
"""

from __future__ import annotations

from azure.core.exceptions import HttpResponseError

from migrator.cloud.errors import CloudError
from migrator.cloud.factory import ClientFactory
from migrator.cloud.records import IdentityRecord, SiteRecord, SubscriptionRecord


class AzureCallError(CloudError):
    """An Azure call that failed after the SDK's retries; the message is one line."""

    def __init__(self, what: str, status: int | None, code: str | None, message: str) -> None:
        super().__init__(f"{what}: {status or ''} {code or ''} {message}".replace("  ", " "))
        self.status = status
        self.code = code


def _call_error(what: str, exc: HttpResponseError) -> AzureCallError:
    code = getattr(getattr(exc, "error", None), "code", None)
    message = getattr(getattr(exc, "error", None), "message", None) or exc.reason or ""
    return AzureCallError(what, exc.status_code, code, str(message).splitlines()[0])


def _identity(identity: object | None) -> IdentityRecord:
    if identity is None:
        return IdentityRecord("None", None, ())
    kind = getattr(identity, "type", None)
    kind_text = str(getattr(kind, "value", kind) or "None")
    uai = getattr(identity, "user_assigned_identities", None) or {}
    return IdentityRecord(kind_text, getattr(identity, "principal_id", None), tuple(sorted(uai)))


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
    )


class WebAdapter:
    """Reads subscriptions, sites and slots for one signed-in operator."""

    def __init__(self, factory: ClientFactory) -> None:
        self.factory = factory

    def subscriptions(self) -> list[SubscriptionRecord]:
        try:
            return [
                SubscriptionRecord(str(s.subscription_id), str(s.display_name),
                                   str(s.tenant_id or ""))
                for s in self.factory.subscriptions().subscriptions.list()
            ]
        except HttpResponseError as exc:
            raise _call_error("list subscriptions", exc) from None

    def sites(self, subscription_id: str) -> list[SiteRecord]:
        """Every site the operator can read in a subscription, each followed by its slots."""
        web = self.factory.web(subscription_id)
        out: list[SiteRecord] = []
        try:
            for site in web.web_apps.list():
                record = _site(subscription_id, site)
                out.append(record)
                for slot in web.web_apps.list_slots(record.resource_group, record.name):
                    out.append(_site(subscription_id, slot, slot_of=record.name))
        except HttpResponseError as exc:
            raise _call_error(f"list sites in subscription {subscription_id}", exc) from None
        return out

    def setting_names(self, site: SiteRecord) -> tuple[list[str], list[str]]:
        """Names of a site's app settings and connection strings (values stay in Azure)."""
        web = self.factory.web(site.subscription_id)
        try:
            if site.slot:
                settings = web.web_apps.list_application_settings_slot(
                    site.resource_group, site.name, site.slot)
                strings = web.web_apps.list_connection_strings_slot(
                    site.resource_group, site.name, site.slot)
            else:
                settings = web.web_apps.list_application_settings(site.resource_group, site.name)
                strings = web.web_apps.list_connection_strings(site.resource_group, site.name)
        except HttpResponseError as exc:
            raise _call_error(f"read settings of {site.display}", exc) from None
        return sorted(settings.properties or {}), sorted(strings.properties or {})

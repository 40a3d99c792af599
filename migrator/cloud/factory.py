"""One client factory: credential, cloud endpoints, CA trust, retries and the Graph event loop.

Every SDK client the tool uses is built here from a `CloudProfile` and an azure-identity
credential, so pointing the tool at Azure China, US Government or `migrator.sim` changes the
profile and nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import requests
from azure.core.credentials import (
    AccessToken,
    AccessTokenInfo,
    TokenCredential,
    TokenRequestOptions,
)
from azure.core.exceptions import ClientAuthenticationError
from azure.core.pipeline.transport import RequestsTransport
from azure.identity import DefaultAzureCredential, ManagedIdentityCredential
from azure.keyvault.secrets import SecretClient
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.keyvault import KeyVaultManagementClient
from azure.mgmt.msi import ManagedServiceIdentityClient
from azure.mgmt.resource.subscriptions import SubscriptionClient
from azure.mgmt.web import WebSiteManagementClient
from kiota_authentication_azure.azure_identity_authentication_provider import (
    AzureIdentityAuthenticationProvider,
)
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph.graph_service_client import GraphServiceClient
from msgraph_core import GraphClientFactory
from requests.adapters import HTTPAdapter
from requests.utils import get_environ_proxies

from migrator.cloud.call_log_policy import CallLogPolicy
from migrator.cloud.graph_transport import ResendingTransport
from migrator.cloud.pacing import Pacer, PacingPolicy
from migrator.cloud.profiles import CloudProfile
from migrator.cloud.reports_pacing import ReportsPacer

if TYPE_CHECKING:
    from azure.monitor.query import LogsQueryClient

T = TypeVar("T")

# The SDK pipeline retries throttled and failing calls itself (honouring Retry-After); these
# bound how long one call may keep trying before the error reaches the caller.
RETRY_TOTAL = 6
RETRY_BACKOFF_MAX = 60


NO_CREDENTIAL = (
    "no Azure credential was found: sign in with `az login` (or `azd auth login`, "
    "`Connect-AzAccount`), set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET for a "
    "service principal, or run where a managed identity is assigned")


class NoCredentialFound(ClientAuthenticationError):
    """Every credential DefaultAzureCredential knows was unavailable: nothing tried to sign in.
    Its message is one line that says how to provide a credential."""


def chain_attempts(message: str) -> list[str]:
    """The first line of each "Name: why" entry of a credential chain's error, in order.
    A chain stops at the first credential that tried and failed, so that one is the last."""
    if "Attempted credentials:" not in message:
        return []
    body = message.split("Attempted credentials:", 1)[1].split("\nTo mitigate this issue", 1)[0]
    return [entry.strip().splitlines()[0] for entry in body.split("\n\t") if entry.strip()]


class _DefaultCredential(DefaultAzureCredential):
    """DefaultAzureCredential whose "nothing to sign in with" is one line saying so and how to
    fix it, not a list of every credential ending with whichever came last."""

    def get_token(self, *scopes: str, claims: str | None = None, tenant_id: str | None = None,
                  **kwargs: Any) -> AccessToken:
        try:
            return super().get_token(*scopes, claims=claims, tenant_id=tenant_id, **kwargs)
        except ClientAuthenticationError as exc:
            raise self._explained(exc) from None

    def get_token_info(self, *scopes: str, options: TokenRequestOptions | None = None
                       ) -> AccessTokenInfo:
        try:
            return super().get_token_info(*scopes, options=options)
        except ClientAuthenticationError as exc:
            raise self._explained(exc) from None

    def _explained(self, exc: ClientAuthenticationError) -> ClientAuthenticationError:
        """The chain lists one entry per credential it asked and stops at the first that tried
        and failed: an entry for every credential (and no Entra error) means none had anything
        to sign in with. (The chain's last credential, the broker, is taken as unavailable
        then: without azure-identity-broker it always is.)"""
        text = str(exc.message or exc)
        attempts = chain_attempts(text)
        if len(attempts) >= len(self.credentials) and "AADSTS" not in text:
            return NoCredentialFound(message=NO_CREDENTIAL)
        return exc


def _quiet_identity_logging() -> None:
    """azure-identity logs every failed chain as a multi-line WARNING (on stderr, through
    logging's last-resort handler, when nothing is configured); the tool reports the cause in
    one line itself. A level someone set on purpose (to debug sign-in) is kept."""
    logger = logging.getLogger("azure.identity")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.ERROR)


def make_credential(profile: CloudProfile, **kwargs: Any) -> TokenCredential:
    """azure-identity's DefaultAzureCredential, aimed at the profile's Entra authority."""
    options: dict[str, Any] = {"authority": profile.authority}
    if profile.disable_instance_discovery:
        options["disable_instance_discovery"] = True
    if profile.ca_bundle:
        options["connection_verify"] = profile.ca_bundle
    options.update(kwargs)
    _quiet_identity_logging()
    return _DefaultCredential(**options)


class ClientFactory:
    """Builds the SDK clients for one cloud and one credential; owns the Graph event loop."""

    def __init__(self, profile: CloudProfile, credential: TokenCredential | None = None, *,
                 max_connections: int = 64) -> None:
        self.profile = profile
        self.credential = credential if credential is not None else make_credential(profile)
        self.pacer = Pacer(profile.arm_throttle_scale)
        # Graph's reports limit counts per application and tenant: one pacer per sign-in
        self.reports_pacer = ReportsPacer()
        # One connection pool for every ARM client, sized for the scanner's worker threads.
        self._session = requests.Session()
        adapter = HTTPAdapter(pool_connections=8, pool_maxsize=max_connections)
        self._session.mount("https://", adapter)
        # requests consults the environment (proxy variables, .netrc, CA bundle variables) on
        # every request when trust_env is set, which costs more than the request itself against
        # a nearby endpoint. Read the environment once, here, and keep its meaning.
        self._session.trust_env = False
        self._session.proxies.update(get_environ_proxies(profile.arm_endpoint))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._graph: GraphServiceClient | None = None
        self._client_cache: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        self._verify: str | bool = (profile.ca_bundle or os.environ.get("REQUESTS_CA_BUNDLE")
                                    or os.environ.get("CURL_CA_BUNDLE") or True)

    def _arm_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "base_url": self.profile.arm_endpoint,
            "credential_scopes": [self.profile.arm_scope],
            "retry_total": RETRY_TOTAL,
            "retry_backoff_max": RETRY_BACKOFF_MAX,
            "per_retry_policies": [PacingPolicy(self.pacer), CallLogPolicy("arm")],
            "transport": RequestsTransport(
                session=self._session, session_owner=False,
                connection_verify=self._verify,
            ),
        }
        return options

    def _cached(self, key: tuple[str, str], build: Callable[[], T]) -> T:
        """One client per service and subscription: building one costs more than a request
        (a pipeline, a serializer of every model), and they are safe to share across threads."""
        with self._lock:
            client = self._client_cache.get(key)
            if client is None:
                client = self._client_cache[key] = build()
            return client

    def subscriptions(self) -> SubscriptionClient:
        return self._cached(("subscriptions", ""), lambda: SubscriptionClient(
            self.credential, **self._arm_options()))

    def web(self, subscription_id: str) -> WebSiteManagementClient:
        return self._cached(("web", subscription_id.lower()), lambda: WebSiteManagementClient(
            self.credential, subscription_id, **self._arm_options()))

    def keyvault(self, subscription_id: str) -> KeyVaultManagementClient:
        return self._cached(("keyvault", subscription_id.lower()), lambda:
                            KeyVaultManagementClient(self.credential, subscription_id,
                                                     **self._arm_options()))

    def authorization(self, subscription_id: str) -> AuthorizationManagementClient:
        return self._cached(("authorization", subscription_id.lower()), lambda:
                            AuthorizationManagementClient(
                                self.credential, subscription_id, api_version="2022-04-01",
                                **self._arm_options()))

    def msi(self, subscription_id: str) -> ManagedServiceIdentityClient:
        return self._cached(("msi", subscription_id.lower()), lambda:
                            ManagedServiceIdentityClient(self.credential, subscription_id,
                                                         **self._arm_options()))

    def key_vault_secrets(self, vault_url: str) -> SecretClient:
        """azure-keyvault-secrets' SecretClient for one vault (its ARM `vaultUri`): it signs in
        by Key Vault's challenge, for the resource the vault names."""
        url = vault_url.rstrip("/") + "/"
        return self._cached(("key-vault-secrets", url.lower()), lambda: SecretClient(
            url, self.credential,
            verify_challenge_resource=self.profile.key_vault_verify_challenge_resource,
            retry_total=RETRY_TOTAL, retry_backoff_max=RETRY_BACKOFF_MAX,
            per_retry_policies=[CallLogPolicy("keyvault")],
            transport=RequestsTransport(session=self._session, session_owner=False,
                                        connection_verify=self._verify)))

    def log_analytics(self) -> LogsQueryClient:
        """azure-monitor-query's client for the profile's Log Analytics query API."""
        from azure.monitor.query import LogsQueryClient

        return self._cached(("log-analytics", ""), lambda: LogsQueryClient(
            self.credential, endpoint=self.profile.log_analytics_endpoint,
            audience=self.profile.log_analytics_audience,
            retry_total=RETRY_TOTAL, retry_backoff_max=RETRY_BACKOFF_MAX,
            per_retry_policies=[CallLogPolicy("loganalytics")],
            transport=RequestsTransport(session=self._session, session_owner=False,
                                        connection_verify=self._verify)))

    def graph(self) -> GraphServiceClient:
        """The msgraph-sdk client; call it through `run_graph` from synchronous code."""
        with self._lock:
            if self._graph is None:
                self._graph = self._run_on_loop(self._build_graph()).result()
            return self._graph

    async def _build_graph(self) -> GraphServiceClient:
        auth = AzureIdentityAuthenticationProvider(
            self.credential, scopes=[self.profile.graph_scope],
            allowed_hosts=[self.profile.graph_host],
        )
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=self.profile.ca_bundle)
            if self.profile.ca_bundle else True
        )
        # TCP_NODELAY: without it every Graph request waited ~100 ms for Nagle's algorithm to
        # meet the server's delayed ACK (urllib3, under the ARM clients, sets it already).
        transport = ResendingTransport(httpx.AsyncHTTPTransport(
            verify=verify, socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]))
        http = GraphClientFactory.create_with_default_middleware(
            client=httpx.AsyncClient(transport=transport, timeout=60.0)
        )
        adapter = GraphRequestAdapter(auth, client=http)
        adapter.base_url = self.profile.graph_base_url
        return GraphServiceClient(request_adapter=adapter)

    def run_graph(self, call: Coroutine[Any, Any, T]) -> T:
        """Run one Graph coroutine on the factory's own loop and wait for its result.

        Build the coroutine in the same breath as you call this, from one thread only: msgraph's
        alternate-key builders (`service_principals_with_app_id`, ...) write into the client's
        shared path parameters. From several threads, use `graph_call`."""
        self.graph()
        return self._run_on_loop(call).result()

    def graph_call(self, build: Callable[[GraphServiceClient], Awaitable[T]]) -> T:
        """Build and start a Graph request on the loop thread, then wait for it: thread-safe,
        since building and sending the request happen in one step of the loop."""
        graph = self.graph()

        async def run() -> T:
            return await build(graph)

        return self._run_on_loop(run()).result()

    def _run_on_loop(self, call: Coroutine[Any, Any, T]) -> Future[T]:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._loop_thread = threading.Thread(
                target=self._loop.run_forever, name="graph-loop", daemon=True
            )
            self._loop_thread.start()
        return asyncio.run_coroutine_threadsafe(call, self._loop)

    def close(self) -> None:
        with self._lock:
            clients, self._client_cache = list(self._client_cache.values()), {}
        for client in clients:
            client.close()
        self._session.close()
        loop, self._loop = self._loop, None
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
            if self._loop_thread is not None:
                self._loop_thread.join(timeout=5)
            loop.close()
        closer = getattr(self.credential, "close", None)
        if callable(closer):
            closer()

    def __enter__(self) -> ClientFactory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def managed_identity_credential() -> ManagedIdentityCredential:
    """The managed identity of the host the code runs on: the Automation account's, for the
    runbook. The host's environment says where its identity endpoint is."""
    return ManagedIdentityCredential()


def secret_credential(profile: CloudProfile, tenant_id: str, client_id: str,
                      client_secret: str) -> TokenCredential:
    """A client-secret credential for one principal (tests sign in as several principals)."""
    from azure.identity import ClientSecretCredential

    options: dict[str, Any] = {"authority": profile.authority}
    if profile.disable_instance_discovery:
        options["disable_instance_discovery"] = True
    if profile.ca_bundle:
        options["connection_verify"] = profile.ca_bundle
    return ClientSecretCredential(tenant_id, client_id, client_secret, **options)

"""Fixtures for tests that drive the real Azure SDKs against a running `migrator.sim`.

`sim` starts one simulator per test (measured here: ~0.1 s to build the tenant and start,
~0.2 s to stop), so a test may change the tenant freely. Clients and credentials made through
`sim` are closed before the server stops: one left open keeps a TLS keep-alive connection that
makes uvicorn's graceful shutdown wait for its timeout.
"""

from __future__ import annotations

import gc
import itertools
import logging
import ssl
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from azure.core.credentials import TokenCredential
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.keyvault import KeyVaultManagementClient
from azure.mgmt.msi import ManagedServiceIdentityClient
from azure.mgmt.resource.subscriptions import SubscriptionClient
from azure.mgmt.web import WebSiteManagementClient

from migrator.cloud.factory import ClientFactory, secret_credential
from migrator.cloud.profiles import CloudProfile, load_profile
from migrator.sim.estate import load_estate
from migrator.sim.server import SimEndpoints, SimServer
from migrator.sim.state import SHORT_DELAYS, Delays, Tenant

T = TypeVar("T")
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


class TrackingClientFactory(ClientFactory):
    """A ClientFactory that remembers the ARM clients it built and closes them with itself."""

    def __init__(self, profile: CloudProfile, credential: TokenCredential | None = None) -> None:
        super().__init__(profile, credential)
        self._clients: list[Any] = []

    def _track(self, client: T) -> T:
        self._clients.append(client)
        return client

    def subscriptions(self) -> SubscriptionClient:
        return self._track(super().subscriptions())

    def web(self, subscription_id: str) -> WebSiteManagementClient:
        return self._track(super().web(subscription_id))

    def keyvault(self, subscription_id: str) -> KeyVaultManagementClient:
        return self._track(super().keyvault(subscription_id))

    def authorization(self, subscription_id: str) -> AuthorizationManagementClient:
        return self._track(super().authorization(subscription_id))

    def msi(self, subscription_id: str) -> ManagedServiceIdentityClient:
        return self._track(super().msi(subscription_id))

    def close(self) -> None:
        clients, self._clients = self._clients, []
        for client in clients:
            client.close()
        super().close()


class Sim:
    """One running simulator and the ways a test signs in to it."""

    def __init__(self, server: SimServer, endpoints: SimEndpoints) -> None:
        self.server = server
        self.endpoints = endpoints
        self.profile = load_profile(str(endpoints.profile_path))
        self._closeables: list[Any] = []

    @property
    def tenant(self) -> Tenant:
        return self.server.tenant

    @property
    def base_url(self) -> str:
        return self.endpoints.base_url

    @property
    def ca_bundle(self) -> str:
        return str(self.endpoints.ca_bundle)

    def http(self) -> httpx.Client:
        """A plain HTTPS client trusting the simulator's CA (use it as a context manager)."""
        return httpx.Client(verify=ssl.create_default_context(cafile=self.ca_bundle),
                            base_url=self.base_url, timeout=30.0)

    def subscription_id_of(self, name: str) -> str:
        found = [s.id for s in self.server.tenant.subscriptions.values() if s.name == name]
        assert found, f"no subscription named {name!r} in the estate"
        return found[0]

    @property
    def subscription_id(self) -> str:
        """The id of the estate's "prod" subscription."""
        return self.subscription_id_of("prod")

    def object_id(self, name: str) -> str:
        """The object id of an estate principal, user-assigned identity or site identity."""
        return self.server.tenant.names[name]

    def client_id(self, principal_name: str) -> str:
        return self.server.tenant.service_principals[self.object_id(principal_name)].app_id

    def secret(self, principal_name: str, index: int = 0) -> str:
        app = self.server.tenant.app_by_app_id(self.client_id(principal_name))
        assert app is not None, f"{principal_name!r} has no application object"
        return app.passwords[index].secret

    def credential(self, principal_name: str | None = None, *, secret_index: int = 0,
                   secret: str | None = None) -> TokenCredential:
        """A ClientSecretCredential for the operator (default) or another estate principal,
        closed when the simulator stops."""
        if principal_name is None:
            cred = secret_credential(self.profile, self.endpoints.tenant_id,
                                     self.endpoints.operator_client_id,
                                     secret if secret is not None
                                     else self.endpoints.operator_secret)
        else:
            cred = secret_credential(
                self.profile, self.endpoints.tenant_id, self.client_id(principal_name),
                secret if secret is not None else self.secret(principal_name, secret_index),
            )
        return self.track(cred)

    def track(self, closeable: T) -> T:
        """Close this (a credential, a client) before the simulator stops."""
        self._closeables.append(closeable)
        return closeable

    def factory(self, principal_name: str | None = None) -> ClientFactory:
        """A ClientFactory signed in as the operator (default) or as the named principal."""
        return self.track(TrackingClientFactory(self.profile, self.credential(principal_name)))

    def factory_with(self, credential: TokenCredential) -> ClientFactory:
        """A ClientFactory over any credential (managed identity, DefaultAzureCredential...)."""
        return self.track(TrackingClientFactory(self.profile, credential))

    def close(self) -> None:
        """Close every client and credential, then drop them and collect garbage.

        A response still referenced keeps its TLS connection open, and uvicorn's graceful
        shutdown waits for it: an HttpResponseError a test kept (pytest.raises makes a cycle
        through the test's frame), or azure-identity's thread-local record of the last failed
        token request, which lives as long as its credential."""
        self._close_all()
        gc.collect()  # after _close_all returned: no local still refers to a closed object

    def _close_all(self) -> None:
        closeables, self._closeables = self._closeables, []
        for item in reversed(closeables):
            item.close()


@contextmanager
def running_sim(estate_path: Path, state_dir: Path, delays: Delays = SHORT_DELAYS
                ) -> Iterator[Sim]:
    """Start a simulator for an estate file; closes every factory it made, then stops.
    Azure's replication and RBAC propagation are shortened from minutes to seconds for speed
    unless `delays` says otherwise."""
    server = SimServer(load_estate(estate_path), state_dir, delays=delays)
    with server as endpoints:
        running = Sim(server, endpoints)
        try:
            yield running
        finally:
            running.close()


@pytest.fixture
def quiet_identity_warnings(caplog: pytest.LogCaptureFixture) -> None:
    """Use in tests that expect refused sign-ins. azure-identity logs each refused token request
    as a WARNING whose args hold the exception; pytest keeps the record (and through its
    traceback the credential and its last, still open, response) until the test's report is
    made, so the simulator's shutdown waits ~2 s for that TLS connection. Raising the level
    keeps the record from being made; the tests assert the exceptions themselves."""
    caplog.set_level(logging.ERROR, logger="azure.identity")


@pytest.fixture
def estate_path() -> Path:
    return FIXTURES / "small.yaml"


@pytest.fixture
def sim(estate_path: Path, tmp_path: Path) -> Iterator[Sim]:
    with running_sim(estate_path, tmp_path / "sim") as running:
        yield running


@pytest.fixture
def start_sim(tmp_path: Path) -> Iterator[Callable[[Path], Sim]]:
    """start_sim(estate_file) -> Sim: another simulator for a test's own estate, stopped after
    the test."""
    counter = itertools.count(1)
    with ExitStack() as stack:

        def _start(path: Path) -> Sim:
            state_dir = tmp_path / f"sim-{next(counter)}"
            return stack.enter_context(running_sim(path, state_dir))

        yield _start

"""The simulated cloud's HTTPS server: one Starlette app on 127.0.0.1 behind a local test CA.

`SimServer` serves a tenant either in the foreground (`migrator sim serve`) or on a background
thread (tests, `migrator demo`). On start it writes, into its state directory, the CA bundle and a
cloud profile, so the CLI and the SDKs reach it exactly as they would reach Azure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trustme
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from migrator.cloud.profiles import CloudProfile, write_profile
from migrator.sim import admin, arm, entra, graph, keyvault, loganalytics
from migrator.sim.context import SimContext
from migrator.sim.estate import EstateSpec
from migrator.sim.faults import FaultConfig, FaultMiddleware
from migrator.sim.state import REALISTIC_DELAYS, Delays, Tenant, build_tenant
from migrator.sim.tokens import TokenIssuer

HOST = "127.0.0.1"


@dataclass(frozen=True)
class SimEndpoints:
    """Where a running simulator is and what a client needs to trust and use it."""

    base_url: str
    profile_path: Path
    ca_bundle: Path
    tenant_id: str
    operator_client_id: str
    operator_secret: str

    def environment(self) -> dict[str, str]:
        """The variables a shell needs to point the CLI (and azure-identity) at the simulator."""
        return {
            "MIGRATOR_CLOUD_PROFILE": str(self.profile_path),
            "REQUESTS_CA_BUNDLE": str(self.ca_bundle),
            "SSL_CERT_FILE": str(self.ca_bundle),
            "AZURE_AUTHORITY_HOST": self.base_url,
            "AZURE_TENANT_ID": self.tenant_id,
            "AZURE_CLIENT_ID": self.operator_client_id,
            "AZURE_CLIENT_SECRET": self.operator_secret,
        }


def build_app(ctx: SimContext) -> Starlette:
    async def root(request: Request) -> Response:
        return JSONResponse({"simulator": "migrator.sim", "tenant": ctx.tenant.id})

    route_list: list[BaseRoute] = [Route("/", root)]
    route_list += entra.routes(ctx)
    route_list += admin.routes(ctx)
    route_list += graph.routes(ctx)
    route_list += loganalytics.routes(ctx)
    route_list += arm.routes(ctx)  # last: its catch-all takes every other path
    return Starlette(routes=route_list)


def _listen(port: int, backlog: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted sockets inherit this on Linux; without it every response waits ~40 ms for
    # Nagle's algorithm to meet the client's delayed ACK.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((HOST, port))
    sock.listen(backlog)
    return sock


class _Server(uvicorn.Server):
    """uvicorn, but idle keep-alive connections are cut at shutdown instead of waiting for
    each TLS peer to answer close_notify (asyncio gives that 30 s)."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for connection in list(self.server_state.connections):
            cycle = getattr(connection, "cycle", None)
            transport = getattr(connection, "transport", None)
            if transport is not None and (cycle is None or cycle.response_complete):
                transport.abort()
        await super().shutdown(sockets)


class SimServer:
    """A running simulator. Use as a context manager, or `start()` / `stop()`."""

    def __init__(self, spec: EstateSpec, state_dir: Path, *, port: int = 0,
                 tenant: Tenant | None = None, faults: FaultConfig | None = None,
                 delays: Delays = REALISTIC_DELAYS, any_api_version: bool = False) -> None:
        self.spec = spec
        self.tenant = tenant if tenant is not None else build_tenant(spec)
        self.tenant.replication_delay = delays.replication
        self.tenant.rbac_delay = delays.rbac
        self.tenant.sign_in_delay = delays.sign_in_ingestion
        self.tenant.workspace_delay = delays.workspace_ingestion
        self.state_dir = state_dir
        self.port = port
        self.faults = faults if faults is not None else FaultConfig()
        self.ctx = SimContext(self.tenant, TokenIssuer(self.tenant.id), faults=self.faults)
        if any_api_version:
            self.ctx.api_versions = None
        routed = keyvault.VaultRouter(build_app(self.ctx), keyvault.vault_app(self.ctx), self.ctx)
        self.middleware = FaultMiddleware(routed, self.faults)
        self.middleware.graph_tenant_size = spec.tenant.size
        self.middleware.tenant_id = self.tenant.id
        self.ctx.extras["middleware"] = self.middleware
        self.app = self.middleware
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._vault_socks: list[socket.socket] = []
        self.endpoints: SimEndpoints | None = None

    # -- setup shared by foreground and background runs

    def _prepare(self) -> uvicorn.Server:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        sock = _listen(self.port, 2048)
        self._sock = sock
        self.port = sock.getsockname()[1]
        base_url = f"https://{HOST}:{self.port}"
        self.ctx.base_url = base_url
        # A vault's data plane has an origin of its own (its vaultUri), as in Azure.
        for name in sorted(self.tenant.vaults):
            vault_sock = _listen(0, 128)
            self._vault_socks.append(vault_sock)
            vault_port = vault_sock.getsockname()[1]
            self.ctx.vault_ports[vault_port] = name
            self.ctx.vault_urls[name] = f"https://{HOST}:{vault_port}/"

        ca = trustme.CA(organization_name="migrator.sim test CA")
        cert = ca.issue_cert(HOST, "localhost")
        ca_path = self.state_dir / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_path))
        key_path = self.state_dir / "server-key.pem"
        cert_path = self.state_dir / "server-cert.pem"
        cert.private_key_pem.write_to_path(str(key_path))
        os.chmod(key_path, 0o600)
        cert.cert_chain_pems[0].write_to_path(str(cert_path))
        for extra in cert.cert_chain_pems[1:]:
            extra.write_to_path(str(cert_path), append=True)

        profile = CloudProfile(
            name="migrator-sim", arm_endpoint=base_url,
            arm_audience="https://management.azure.com/", graph_endpoint=base_url,
            graph_audience="https://graph.microsoft.com", authority=base_url,
            # Log Analytics' query API (loganalytics.py) at /v1 here; tokens for its real name.
            log_analytics_endpoint=base_url, log_analytics_audience="https://api.loganalytics.io",
            ca_bundle=str(ca_path), disable_instance_discovery=True, tenant_id=self.tenant.id,
            # The vaults listen on 127.0.0.1, not on a host under vault.azure.net, which the
            # Key Vault SDK's challenge check would otherwise require.
            key_vault_verify_challenge_resource=False,
            arm_throttle_scale=self.faults.throttle_scale,
            # The apps' health routes (admin.py): where the executor probes an app after a swap.
            site_url=f"{base_url}/_sites/{{site}}{{slot_path}}",
        )
        profile_path = self.state_dir / "profile.json"
        write_profile(profile, profile_path)
        operator = self.tenant.app_by_app_id(
            self.tenant.service_principals[self.tenant.names[self.tenant.operator]].app_id)
        assert operator is not None
        valid = [p for p in operator.passwords if p.end > p.start]
        self.endpoints = SimEndpoints(
            base_url, profile_path, ca_path, self.tenant.id, operator.app_id,
            valid[0].secret if valid else "",
        )
        config = uvicorn.Config(
            self.app, ssl_certfile=str(cert_path), ssl_keyfile=str(key_path),
            log_level="warning", access_log=False, lifespan="off",
            timeout_keep_alive=30, backlog=2048, timeout_graceful_shutdown=2,
        )
        return _Server(config)

    # -- background (tests, demo)

    def start(self, timeout: float = 30.0) -> SimEndpoints:
        server = self._prepare()
        self._server = server
        sockets = self._sockets()
        self._thread = threading.Thread(
            target=lambda: asyncio.run(server.serve(sockets=sockets)),
            name="migrator-sim", daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the simulator did not start")
            time.sleep(0.01)
        assert self.endpoints is not None
        return self.endpoints

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        for sock in (self._sock, *self._vault_socks):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()

    def _sockets(self) -> list[socket.socket] | None:
        return [self._sock, *self._vault_socks] if self._sock else None

    def __enter__(self) -> SimEndpoints:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- foreground (`migrator sim serve`)

    def serve_forever(self, on_ready: Any = None) -> None:
        """Serve until SIGINT/SIGTERM; uvicorn's own handlers stop it cleanly."""
        server = self._prepare()
        self._server = server

        async def run() -> None:
            task = asyncio.create_task(server.serve(sockets=self._sockets()))
            while not server.started and not task.done():
                await asyncio.sleep(0.01)
            # Our own handlers: uvicorn's would re-raise the signal after shutdown, killing the
            # process with it instead of letting the command end with exit code 0.
            def stop(signum: int, frame: object) -> None:
                server.should_exit = True

            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, stop)
            if server.started and on_ready is not None:
                on_ready(self.endpoints)
            await task

        asyncio.run(run())

"""The ARM session reads the environment once (speed) but must keep its meaning: an operator
behind a proxy, or with a corporate CA bundle, gets the same behaviour as plain requests."""

from __future__ import annotations

import pytest

from migrator.cloud.factory import ClientFactory
from migrator.cloud.profiles import PUBLIC


class _NoCredential:
    def get_token(self, *scopes: str, **kwargs: object) -> None:
        raise AssertionError("no call is made in this test")


def test_proxy_and_ca_bundle_variables_still_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/corp/ca.pem")
    with ClientFactory(PUBLIC, _NoCredential()) as factory:  # type: ignore[arg-type]
        assert factory._session.trust_env is False
        assert factory._session.proxies.get("https") == "http://proxy.example:3128"
        assert factory._verify == "/etc/corp/ca.pem"


def test_profile_ca_bundle_wins_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/corp/ca.pem")
    profile = PUBLIC.model_copy(update={"ca_bundle": "/tmp/sim-ca.pem"})
    with ClientFactory(profile, _NoCredential()) as factory:  # type: ignore[arg-type]
        assert factory._verify == "/tmp/sim-ca.pem"

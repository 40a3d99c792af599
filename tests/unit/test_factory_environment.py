"""The ARM session reads the environment once (speed) but must keep its meaning: an operator
behind a proxy, or with a corporate CA bundle, gets the same behaviour as plain requests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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


def _bare_environment(home: Path) -> dict[str, str]:
    """No AZURE_* variable, no managed-identity endpoint variable, an empty HOME (no Azure CLI,
    azd or token cache), and a PATH without az, pwsh or azd: an operator with no credential."""
    return {"PATH": str(Path(sys.executable).parent) + os.pathsep + "/usr/bin:/bin",
            "HOME": str(home), "LANG": "C.UTF-8", "COLUMNS": "300"}


def test_scan_without_any_credential_says_so_in_one_line(tmp_path: Path) -> None:
    """Before: azure-identity's multi-line warning, then `error: ... sign-in failed:
    VisualStudioCodeCredential requires the 'azure-identity-broker' package ...`: the last
    credential tried, not the cause. Now: one line that no credential was found and how to
    provide one, exit code 2 (bad input: the operator could not sign in)."""
    home = tmp_path / "home"
    home.mkdir()
    env = _bare_environment(home)
    assert not any(name.startswith(("AZURE_", "MSI_", "IDENTITY_")) for name in env)
    # Managed identity is probed at IMDS (169.254.169.254); bounded in case it is slow.
    done = subprocess.run([sys.executable, "-m", "migrator", "scan"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)

    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1, done.stderr
    line = lines[0]
    assert line.startswith("error: ")
    assert "no azure credential" in line.lower()
    for hint in ("az login", "AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET",
                 "managed identity"):
        assert hint in line
    assert "VisualStudioCodeCredential" not in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_a_credential_that_tried_and_failed_is_named_not_the_last_listed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When a credential does try (here the environment's service principal, at an authority
    where nothing listens), DefaultAzureCredential stops there: that is the cause, not "no
    credential found" and not some other credential further down the list."""
    from azure.core.exceptions import ClientAuthenticationError

    from migrator.cloud.factory import NoCredentialFound, make_credential
    from migrator.cloud.web import sign_in_reason

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("AZURE_TENANT_ID", "00000000-0000-4000-8000-000000000001")
    monkeypatch.setenv("AZURE_CLIENT_ID", "00000000-0000-4000-8000-000000000002")
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "generated-" + os.urandom(8).hex())
    profile = PUBLIC.model_copy(update={"authority": "https://127.0.0.1:9",
                                        "disable_instance_discovery": True})
    credential = make_credential(profile, retry_total=0)
    try:
        with pytest.raises(ClientAuthenticationError) as info:
            credential.get_token("https://management.azure.com/.default")
    finally:
        credential.close()  # type: ignore[attr-defined]
    assert not isinstance(info.value, NoCredentialFound)
    reason = sign_in_reason(info.value)
    assert reason.startswith("EnvironmentCredential: "), reason
    assert "\n" not in reason
    assert os.environ["AZURE_CLIENT_SECRET"] not in reason


@pytest.mark.parametrize(("message", "reason"), [
    ("DefaultAzureCredential failed to retrieve a token from the included credentials.\n"
     "Attempted credentials:\n\tEnvironmentCredential: EnvironmentCredential authentication "
     "unavailable. Environment variables are not fully configured.\nVisit https://aka.ms/x to "
     "troubleshoot this issue.\n\tManagedIdentityCredential: ManagedIdentityCredential "
     "authentication unavailable.\n\tAzureCliCredential: ERROR: the refresh token has expired\n"
     "To mitigate this issue, please refer to the troubleshooting guidelines here at "
     "https://aka.ms/azsdk/python/identity/defaultazurecredential/troubleshoot.",
     "AzureCliCredential: ERROR: the refresh token has expired"),
    ("Authentication failed: AADSTS7000215: Invalid client secret provided. Trace ID: 1",
     "Authentication failed: AADSTS7000215: Invalid client secret provided."),
    ("ClientSecretCredential: connection refused", "ClientSecretCredential: connection refused"),
])
def test_sign_in_reason_is_the_cause(message: str, reason: str) -> None:
    from azure.core.exceptions import ClientAuthenticationError

    from migrator.cloud.web import sign_in_reason

    assert sign_in_reason(ClientAuthenticationError(message=message)) == reason


@pytest.mark.parametrize(("message", "transient"), [
    # What azure-identity raised when migrator.sim's token endpoint answered 503 / 500 / cut
    # the connection, after azure-core's own retries (probed; see test_sign_in_outage.py).
    ("Authentication failed: HTTP Error: 503", True),
    ("Authentication failed: HTTP Error: 500", True),
    ("Authentication failed: HTTP Error: 429", True),
    ("Authentication failed: ('Connection aborted.', RemoteDisconnected('Remote end closed "
     "connection without response'))", True),
    # Entra refused: the same sign-in fails again.
    ("Authentication failed: AADSTS7000215: Invalid client secret provided. Trace ID: 1", False),
    ("Authentication failed: AADSTS50034: HTTP Error: 503 is not what this is", False),
    ("Authentication failed: HTTP Error: 400", False),
    ("ClientSecretCredential: connection refused", False),
])
def test_a_sign_in_that_met_an_outage_is_transient(message: str, transient: bool) -> None:
    """The executor tries a transient sign-in failure again (bounded), as it does a 503 from
    ARM; a refused one surfaces at once."""
    from azure.core.exceptions import ClientAuthenticationError

    from migrator.cloud.web import sign_in_error

    error = sign_in_error("read site x", ClientAuthenticationError(message=message))
    assert error.transient is transient
    assert str(error).startswith("read site x: sign-in failed: ")


def test_no_credential_at_all_is_not_transient() -> None:
    from migrator.cloud.factory import NO_CREDENTIAL, NoCredentialFound
    from migrator.cloud.web import sign_in_error

    error = sign_in_error(None, NoCredentialFound(message=NO_CREDENTIAL))
    assert not error.transient
    assert str(error) == f"sign-in failed: {NO_CREDENTIAL}"

"""`migrator sim serve` and `migrator demo` as a user runs them: real processes, real SDKs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from migrator.cli import app
from migrator.cloud.factory import ClientFactory, make_credential
from migrator.cloud.profiles import load_profile
from migrator.sim.catalog import generate_client_secret
from migrator.sim.exports import wait_for_exports

FIXTURES = Path(__file__).parents[1] / "fixtures"


def _start(args: list[str], tmp_path: Path) -> tuple[subprocess.Popen[str], dict[str, str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "migrator", "sim", "serve", *args,
         "--state-dir", str(tmp_path / "state")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=os.environ | {"COLUMNS": "200"},
    )
    exports = wait_for_exports(proc, timeout=60)  # a hung start fails the test, not the run
    if exports is not None:
        return proc, exports
    proc.kill()
    raise AssertionError(f"simulator did not start: {proc.stderr.read() if proc.stderr else ''}")


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_serve_prints_exports_that_point_the_sdks_at_it_and_stops_cleanly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stop: signal.Signals) -> None:
    proc, exports = _start(["--estate", str(FIXTURES / "small.yaml")], tmp_path)
    try:
        assert set(exports) >= {"MIGRATOR_CLOUD_PROFILE", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE",
                                "AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET"}
        for name, value in exports.items():
            monkeypatch.setenv(name, value)
        # What a user does after `eval $(migrator sim serve ...)`: DefaultAzureCredential.
        profile = load_profile(exports["MIGRATOR_CLOUD_PROFILE"])
        with ClientFactory(profile, make_credential(profile)) as factory:
            names = [s.display_name for s in factory.subscriptions().subscriptions.list()]
        assert names == ["prod"]
    finally:
        proc.send_signal(stop)
        try:
            code = proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0
    assert proc.stderr is not None and "Traceback" not in proc.stderr.read()


def test_serve_refuses_a_malformed_estate_with_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text((FIXTURES / "small.yaml").read_text().replace(
        "role: Owner", "role: Overlord"))
    result = subprocess.run(
        [sys.executable, "-m", "migrator", "sim", "serve", "--estate", str(bad)],
        capture_output=True, text=True, timeout=60, check=False, env=os.environ | {"COLUMNS": "300"})
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert str(bad) in lines[0] and "unknown role 'Overlord'" in lines[0]
    assert "role_assignments[0].role" in lines[0]


def test_serve_refuses_a_bad_fault_spec(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["sim", "serve", "--estate", str(FIXTURES / "small.yaml"),
                                      "--fault", "arm:teapot=0.5"])
    assert result.exit_code == 2
    assert "fault kind 'teapot'" in result.output


def test_demo_shows_apps_and_never_a_secret(tmp_path: Path) -> None:
    secrets = [generate_client_secret() for _ in range(6)]
    text = (FIXTURES / "small.yaml").read_text()
    for i, name in enumerate(["migrator-operator", "orders-sp", "reports-sp", "disabled-sp",
                              "reader-sp", "nobody-sp"]):
        text = text.replace(f"  - name: {name}\n    secrets: [{{}}",
                            f"  - name: {name}\n    secrets: [{{value: \"{secrets[i]}\"}}", 1)
    assert all(s in text for s in secrets)
    estate = tmp_path / "estate.yaml"
    estate.write_text(text)
    out_dir = tmp_path / "plans"
    result = CliRunner().invoke(app, ["demo", "--estate", str(estate), "--dir", str(out_dir)],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in ("orders-api", "orders-api/staging", "reports-fn", "AZURE_CLIENT_SECRET"):
        assert name in result.output
    assert "dev-api" not in result.output  # the operator holds no role in "dev"
    assert "dry run" in result.output  # the plan follows the scan
    written = sorted(p.name for p in out_dir.iterdir())
    assert written == ["demo.html", "demo.json", "demo.md"]
    outputs = [result.output, *((out_dir / name).read_text() for name in written)]
    assert "orders-api" in outputs[-1]  # the Markdown report names the apps
    for secret in secrets:
        for text in outputs:
            assert secret not in text
            assert secret[:12] not in text


def test_demo_bad_estate_exit_2(tmp_path: Path) -> None:
    estate = tmp_path / "e.yaml"
    estate.write_text("tenant: [")
    result = CliRunner().invoke(app, ["demo", "--estate", str(estate)])
    assert result.exit_code == 2
    assert "bad YAML" in result.output


def test_generate_is_deterministic_and_serves(tmp_path: Path) -> None:
    args = ["sim", "generate", "--subscriptions", "3", "--apps", "120", "--shared-principals",
            "4", "--slots", "0.2", "--seed", "42"]
    first = CliRunner().invoke(app, args)
    second = CliRunner().invoke(app, [*args, "--output", str(tmp_path / "e.yaml")])
    assert first.exit_code == 0, first.output
    assert second.exit_code == 0, second.output
    assert (tmp_path / "e.yaml").read_text() == first.stdout
    other = CliRunner().invoke(app, [*args[:-1], "43"])
    assert other.stdout != first.stdout
    proc, exports = _start(["--estate", str(tmp_path / "e.yaml")], tmp_path)
    try:
        assert exports["AZURE_CLIENT_ID"]
    finally:
        proc.terminate()
        assert proc.wait(timeout=15) == 0


def test_generate_refuses_impossible_arguments() -> None:
    result = CliRunner().invoke(app, ["sim", "generate", "--apps", "5",
                                      "--shared-principals", "100"])
    assert result.exit_code == 2
    assert "shared principals need at least" in result.output


def test_demo_migrates_one_sample_app_rolls_another_back_and_holds_a_revoke(tmp_path: Path) -> None:
    """The bundled sample, with secrets this test knows, so it can look for them."""
    from migrator.demo import sample_estate

    text = sample_estate().read_text()
    secrets = []
    while "secrets: [{}]" in text:
        secrets.append(generate_client_secret())
        text = text.replace("secrets: [{}]", f'secrets: [{{value: "{secrets[-1]}"}}]', 1)
    assert len(secrets) >= 6
    estate = tmp_path / "contoso.yaml"
    estate.write_text(text)
    result = CliRunner().invoke(app, ["demo", "--estate", str(estate), "--dir",
                                      str(tmp_path / "plans")], env={"COLUMNS": "220"})
    assert result.exit_code == 0, result.output
    acts = result.output.split("Carrying out part of the plan", 1)[1]
    assert "inventory-api" in acts and "done (stages done: identity, grant, swap, revoke)" in acts
    assert "rolled-back (stages done: none)" in acts
    assert acts.count("healthy → healthy") == 4
    # the release pipeline signs in with catalog-api's secret: the logs refuse its revoke
    catalog = acts.split("catalog-api", 1)[1]
    assert "refused (stages done: identity, grant, swap)" in catalog
    assert "203.0.113.7" in catalog and "nothing was removed" in catalog
    assert "ManagedIdentityCredential (system-assigned inventory-api)" in acts
    assert "EnvironmentCredential (client secret of billing-sp)" in acts  # back on its secret
    for secret in secrets:
        assert secret not in result.output

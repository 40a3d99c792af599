"""Which password credential an app's secret is, from Graph's 3-character hint alone, and the
client-side ARM pacer that keeps a scan inside the token buckets."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

import pytest

from migrator.cloud.pacing import Bucket, Pacer, request_kind
from migrator.cloud.records import PasswordCredentialRecord, PrincipalRecord
from migrator.detect import Note
from migrator.detect.findings import FindingKind, KeyVaultRef, SecretFinding, SettingRef
from migrator.scan import match_credential

NOW = datetime(2026, 11, 26, tzinfo=timezone.utc)
LIVE, DEAD = "2027-06-30T00:00:00+00:00", "2020-01-01T00:00:00+00:00"


def cred(key: str, hint: str | None, end: str | None = LIVE) -> PasswordCredentialRecord:
    return PasswordCredentialRecord(key, hint, None, "2024-01-01T00:00:00+00:00", end)


def principal(*creds: PasswordCredentialRecord) -> PrincipalRecord:
    return PrincipalRecord("app", "oid", "orders-sp", True, "Application", "aoid", creds, ())


def finding(hint: str | None, vault: bool = False) -> SecretFinding:
    return SecretFinding(
        FindingKind.KEY_VAULT_REFERENCE if vault else FindingKind.CLIENT_SECRET, "r",
        SettingRef("AZURE_CLIENT_SECRET"), client_id="app", hint=hint,
        key_vault=KeyVaultRef("kv", "s") if vault else None)


@pytest.mark.parametrize(("creds", "hint", "status", "key"), [
    ((cred("k1", "abc"), cred("k2", "xyz")), "xyz", "matched", "k2"),
    ((cred("k1", "abc", DEAD), cred("k2", "abc")), "abc", "matched", "k2"),
    ((cred("k1", "abc"), cred("k2", "abc")), "abc", "ambiguous", None),
    ((cred("k1", "abc", DEAD),), "abc", "expired", "k1"),
    ((cred("k1", "abc"),), "zzz", "no-match", None),
    ((), "abc", "no-match", None),
    ((cred("k1", "abc", None),), "abc", "matched", "k1"),  # no end date: never expires
], ids=["by-hint", "expired-twin-ignored", "ambiguous", "expired", "removed", "none", "no-end"])
def test_match_by_hint(creds: tuple[PasswordCredentialRecord, ...], hint: str, status: str,
                       key: str | None) -> None:
    match = match_credential(finding(hint), principal(*creds), NOW)
    assert (match.status, match.key_id) == (status, key)
    assert match.reason


def test_vault_held_secret_matches_only_by_elimination() -> None:
    one = match_credential(finding(None, vault=True), principal(cred("k1", "abc"),
                                                                cred("k0", "old", DEAD)), NOW)
    assert (one.status, one.key_id) == ("matched", "k1")
    two = match_credential(finding(None, vault=True),
                           principal(cred("k1", "abc"), cred("k2", "def")), NOW)
    assert (two.status, two.key_id, set(two.candidates)) == ("not-checked", None, {"k1", "k2"})


def test_a_malformed_reference_matches_no_credential() -> None:
    """Its text is all the app gets (InvalidSyntax), so even a principal's only credential is
    not the one the app uses: no revoke may be planned from it."""
    broken = dataclasses.replace(finding(None), note=Note.MALFORMED_REFERENCE.value)
    match = match_credential(broken, principal(cred("k1", "abc")), NOW)
    assert (match.status, match.key_id, match.candidates) == ("not-checked", None, ())
    assert "cannot parse" in match.reason


def test_unknown_principal() -> None:
    assert match_credential(finding("abc"), None, NOW).status == "no-match"


@pytest.mark.parametrize(("method", "kind"), [
    ("GET", "read"), ("HEAD", "read"), ("POST", "write"), ("PUT", "write"),
    ("PATCH", "write"), ("DELETE", "delete")])
def test_request_kinds_follow_arm(method: str, kind: str) -> None:
    assert request_kind(method) == kind  # POST …/appsettings/list spends a write token


def test_bucket_waits_for_refill_and_learns_from_the_server() -> None:
    clock = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    bucket = Bucket(capacity=2, refill=10, clock=lambda: clock[0])
    bucket.acquire(sleep)
    bucket.acquire(sleep)
    assert slept == []
    bucket.acquire(sleep)  # empty: one token takes 0.1 s at 10/s
    assert slept == [pytest.approx(0.1)]
    bucket.observe(0)  # the server says none are left (another client spent them)
    bucket.throttled(2.0)  # and a 429 said: come back in 2 s
    bucket.acquire(sleep)
    assert sum(slept) == pytest.approx(2.1)


def test_pacer_scale_and_off_switch() -> None:
    assert Pacer(0).bucket("s", "write") is None
    bucket = Pacer(0.05).bucket("s", "write")
    assert bucket is not None
    assert (bucket.capacity, bucket.refill) == (10.0, 0.5)
    assert Pacer(1.0).bucket("S", "read") is not Pacer(1.0).bucket("s", "read")

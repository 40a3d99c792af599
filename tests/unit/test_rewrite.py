"""The swap's rewrites, table-tested: what the app's settings become, exactly."""

from __future__ import annotations

import pytest

from migrator.execute.rewrite import (
    RewriteError,
    apply_connection_string_edits,
    apply_setting_edits,
    resolve,
    sql_password,
    sql_to_managed_identity,
)
from migrator.plan.model import IDENTITY_CLIENT_ID, ConnectionStringEdit, SettingEdit

CLIENT = "11111111-2222-3333-4444-555555555555"


@pytest.mark.parametrize(("before", "client_id", "after"), [
    ("Server=tcp:s.database.windows.net,1433;Database=db;Authentication=Active Directory "
     "Service Principal;User Id=abc;Password=p4ss;Encrypt=True",
     None,
     "Server=tcp:s.database.windows.net,1433;Database=db;Authentication=Active Directory "
     "Managed Identity;Encrypt=True;"),
    ("Server=s;Database=db;Authentication=Active Directory Service Principal;"
     "UID=abc;PWD={p;a}}ss}",
     CLIENT,
     f"Server=s;Database=db;Authentication=Active Directory Managed Identity;UID={CLIENT};"),
    ("Data Source=s;Initial Catalog=db;Password='x;y';Authentication=ActiveDirectoryServicePrincipal",
     CLIENT,
     "Data Source=s;Initial Catalog=db;Authentication=Active Directory Managed Identity;"
     f"User Id={CLIENT};"),
])
def test_sql_connection_string_becomes_managed_identity(before: str, client_id: str | None,
                                                        after: str) -> None:
    assert sql_to_managed_identity(before, client_id) == after


def test_sql_password_reads_quoted_and_braced_values() -> None:
    assert sql_password("Server=s;Password={p;a}}ss};Database=d") == "p;a}ss"
    assert sql_password("Server=s;Pwd='it''s';") == "it's"
    assert sql_password("Server=s;Password=plain") == "plain"
    assert sql_password("Server=s") is None


def test_a_string_without_authentication_is_refused() -> None:
    with pytest.raises(RewriteError):
        sql_to_managed_identity("Server=s;User Id=sa;Password=x", None)


def test_setting_edits_remove_and_set_with_placeholders() -> None:
    settings = {"AZURE_CLIENT_ID": "old", "azure_client_secret": "s3cret", "KEEP": "1"}
    edits = (SettingEdit(name="AZURE_CLIENT_ID", action="set", value=IDENTITY_CLIENT_ID),
             SettingEdit(name="AZURE_CLIENT_SECRET", action="remove"),
             SettingEdit(name="Bus__credential", action="set", value="managedidentity"))
    assert apply_setting_edits(settings, edits, {IDENTITY_CLIENT_ID: CLIENT}) == {
        "AZURE_CLIENT_ID": CLIENT, "KEEP": "1", "Bus__credential": "managedidentity"}
    assert settings["azure_client_secret"] == "s3cret"  # the input is not changed


def test_an_unresolved_placeholder_is_never_written() -> None:
    with pytest.raises(RewriteError, match=r"identity\.client_id"):
        resolve(IDENTITY_CLIENT_ID, {})


def test_connection_string_edits_in_either_place() -> None:
    sp = "Server=s;Database=d;Authentication=Active Directory Service Principal;User Id=a;Password=p"
    strings, settings = apply_connection_string_edits(
        {"Db": ("SQLAzure", sp)}, {"OTHER_DB": sp},
        (ConnectionStringEdit(name="Db", source="connection_string",
                              rewrite="sql-managed-identity", client_id=IDENTITY_CLIENT_ID),
         ConnectionStringEdit(name="OTHER_DB", source="app_setting",
                              rewrite="sql-managed-identity")),
        {IDENTITY_CLIENT_ID: CLIENT})
    assert strings["Db"] == ("SQLAzure", "Server=s;Database=d;Authentication=Active Directory "
                                         f"Managed Identity;User Id={CLIENT};")
    assert "Password" not in settings["OTHER_DB"] and "User Id" not in settings["OTHER_DB"]

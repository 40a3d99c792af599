"""Terminal rendering with Rich: tables people read, never a secret value."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from migrator.demo import DemoResult


def render_demo(result: DemoResult, console: Console) -> None:
    console.print(f"[bold]msi-migrator demo[/] against the simulated tenant at {result.base_url}")
    console.print(f"estate: {result.estate}\n", highlight=False)
    if not result.subscriptions:
        console.print("The operator can read no subscription.")
        return
    for sub in result.subscriptions:
        table = Table(title=f"subscription {sub.name} ({sub.id})", title_justify="left")
        for column in ("app", "identity", "settings (names only)", "health (simulator)"):
            table.add_column(column, overflow="fold")
        for view in (v for v in result.sites if v.site.subscription_id == sub.id):
            site = view.site
            settings = list(view.app_setting_names) + [
                f"{name} [dim](connection string)[/]" for name in view.connection_string_names]
            table.add_row(
                f"{site.display}\n[dim]{site.kind}[/]", site.identity.type,
                "\n".join(settings) or "-",
                ("[green]healthy[/]" if view.healthy else "[red]unhealthy[/]")
                + f"\n[dim]{view.credential}[/]",
            )
        console.print(table)
    console.print(
        f"{len(result.sites)} apps and slots in {len(result.subscriptions)} subscription(s). "
        "Setting values stay in Azure: the tool reports names only.")
    console.print("[dim]Next stages (scan, plan, migrate) are tracked in the open issues.[/]")

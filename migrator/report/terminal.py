"""Terminal rendering with Rich: tables people read, never a secret value."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from migrator.demo import DemoResult
from migrator.detect.findings import FindingKind
from migrator.inventory import Inventory
from migrator.untrusted import markup


def render_demo(result: DemoResult, console: Console) -> None:
    console.print(f"[bold]msi-migrator demo[/] against the simulated tenant at {result.base_url}")
    console.print(f"estate: {markup(result.estate)}\n", highlight=False)
    if not result.subscriptions:
        console.print("The operator can read no subscription.")
        return
    for sub in result.subscriptions:
        table = Table(title=f"subscription {markup(sub.name)} ({markup(sub.id)})",
                      title_justify="left")
        for column in ("app", "identity", "settings (names only)", "health (simulator)"):
            table.add_column(column, overflow="fold")
        for view in (v for v in result.sites if v.site.subscription_id == sub.id):
            site = view.site
            settings = [markup(n) for n in view.app_setting_names] + [
                f"{markup(name)} [dim](connection string)[/]"
                for name in view.connection_string_names]
            table.add_row(
                f"{markup(site.display)}\n[dim]{markup(site.kind)}[/]",
                markup(site.identity.type),
                "\n".join(settings) or "-",
                ("[green]healthy[/]" if view.healthy else "[red]unhealthy[/]")
                + f"\n[dim]{markup(view.credential)}[/]",
            )
        console.print(table)
    console.print(
        f"{len(result.sites)} apps and slots in {len(result.subscriptions)} subscription(s). "
        "Setting values stay in Azure: the tool reports names only.\n")
    console.print("[bold]migrator scan[/]", highlight=False)
    render_inventory(result.inventory, console)


def render_demo_acts(result: DemoResult, console: Console) -> None:
    """What the demo changed, with the simulator's health verdict before and after."""
    if not result.acts:
        return
    table = Table(title="migrator apply / rollback against the simulated tenant",
                  title_justify="left")
    for column in ("app", "what", "result", "health before → after", "signs in with"):
        table.add_column(column, overflow="fold")
    for act in result.acts:
        o = act.outcome
        verdict = ("[green]healthy[/]" if act.healthy_before else "[red]unhealthy[/]") + \
            " → " + ("[green]healthy[/]" if act.healthy_after else "[red]unhealthy[/]")
        stages = ", ".join(o.stages_done) or "none"
        text = f"{o.outcome} (stages done: {stages})" + (f"\n{markup(o.message)}"
                                                        if o.message else "")
        text += "".join(f"\n[dim]{markup(n)}[/]" for n in o.notes)
        table.add_row(markup(act.app), markup(act.title), text, verdict,
                      markup(act.credential_after))
    console.print(table)


def render_inventory(inventory: Inventory, console: Console) -> None:
    """The scan as people read it: findings per app, principals with their rights, gaps."""
    apps_with = [a for a in inventory.apps if a.findings]
    title = (f"{len(inventory.apps)} apps and slots scanned in "
             f"{len(inventory.subscriptions)} subscription(s), {inventory.stats.seconds:.1f} s; "
             f"{sum(len(a.findings) for a in apps_with)} finding(s) in {len(apps_with)} app(s)")
    console.print(f"[bold]{title}[/]", highlight=False)
    if apps_with:
        table = Table(title="Findings (setting names only; values are never shown)",
                      title_justify="left")
        for column in ("app", "setting", "kind", "principal / hint", "credential"):
            table.add_column(column, overflow="fold")
        usage = {(u.site_id, u.setting): (p, u) for p in inventory.principals for u in p.used_by}
        for app in apps_with:
            for f in app.findings:
                principal, use = usage.get((app.site.id, f.secret.name), (None, None))
                who = markup(principal.name if principal else (f.client_id or "-"))
                if f.hint:
                    who += f"\n[dim]hint {markup(f.hint)}…[/]"
                elif f.key_vault:
                    who += f"\n[dim]in vault {markup(f.key_vault.vault)}[/]"
                elif f.service:
                    who = markup(f.service)
                cred = "-"
                if use is not None:
                    cred = markup(use.match.status) + (f"\n[dim]{markup(use.match.key_id)}[/]"
                                               if use.match.key_id else "")
                setting = markup(f.secret.name) + (" [dim](sticky)[/]" if f.secret.sticky else "")
                if f.secret.source == "connection_string":
                    setting += " [dim](connection string)[/]"
                table.add_row(markup(app.site.display), setting, _kind_label(f.kind), who, cred)
        console.print(table)
    if inventory.principals:
        table = Table(title="Principals and what they may do", title_justify="left")
        for column in ("principal", "used by", "ARM roles", "Key Vault policies", "Graph roles"):
            table.add_column(column, overflow="fold")
        for p in inventory.principals:
            apps = [markup(a) for a in sorted({u.app for u in p.used_by})]
            roles = [markup(f"{r.role_name} @ {_short_scope(r.scope)}"
                            + (" (with a condition)" if r.condition else ""))
                     for r in p.role_assignments]
            vaults = [markup(f"{v.vault_name}: {', '.join(v.secrets) or '-'}")
                      for v in p.vault_policies]
            graph = [markup(g.app_role_value or g.app_role_id) for g in p.graph_roles]
            state = "" if p.principal is None or p.principal.enabled else " [red](disabled)[/]"
            if p.principal is None:
                state = " [red](not found)[/]"
            table.add_row(markup(p.name) + state, "\n".join(apps), "\n".join(roles) or "-",
                          "\n".join(vaults) or "-", "\n".join(graph) or "-")
        console.print(table)
    if inventory.gaps:
        console.print("[bold yellow]Incomplete: the operator could not read[/]")
        for gap in inventory.gaps:
            console.print(f"  [yellow]•[/] {markup(gap.scope)}: {markup(gap.message)}",
                          highlight=False)
    else:
        console.print("[green]Complete: every subscription in scope was read.[/]")


def _kind_label(kind: FindingKind) -> str:
    return {
        FindingKind.CLIENT_SECRET: "client secret",
        FindingKind.KEY_VAULT_REFERENCE: "secret via Key Vault",
        FindingKind.SQL_SERVICE_PRINCIPAL: "SQL as principal",
        FindingKind.INBOUND: "[magenta]inbound sign-in[/]",
        FindingKind.SHARED_KEY: "[cyan]shared key[/]",
    }[kind]


def _short_scope(scope: str) -> str:
    parts = scope.split("/")
    if len(parts) >= 5 and parts[3].lower() == "resourcegroups":
        rest = "/".join(parts[5:])
        return f"rg {parts[4]}" + (f"/{rest.rsplit('/', 1)[-1]}" if rest else "")
    if len(parts) == 3:
        return f"subscription {parts[2][:8]}…"
    return scope

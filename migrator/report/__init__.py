"""Output for people and machines, one module per format; none calls Azure or decides a plan.

- `terminal`, `json_output`: the scan's inventory as Rich tables or plain JSON.
- `plan_view`: what a plan report says (stages, blockers, warnings, wording), decided once;
  `plan_terminal`, `plan_markdown`, `plan_html` and `plan_json` only lay it out.
- `plan_files`: writes a plan and its reports atomically beside each other.

Every string from Azure or the operator goes through `migrator.untrusted` before it is
printed, so a name cannot restyle the terminal or inject Markdown or HTML.
"""

"""Azure Automation runbook (Python 3.10): msi-migrator, unattended.

Parameters (sys.argv): `plan` or `advance`, then `--blob-url URL --table-url URL` of the
storage account that holds the plans, approvals and journal, and optionally `--container`,
`--table`, `--plan-prefix`, `--subscription ID` (repeatable), `--soak 24h`,
`--health-timeout SECONDS`. The job signs in with the Automation account's system-assigned
managed identity. See runbooks/README.md for the permissions it needs.

The msi-migrator wheel and its dependencies come from the account's Python 3.10 runtime
environment (`python runbooks/package.py --dest DIR` builds them).
"""

import sys

from migrator.runbook import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

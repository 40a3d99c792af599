"""msi-migrator: move Azure apps from service-principal secrets to managed identities."""

__version__ = "0.1.0"

"""The simulated Azure cloud: ARM, Graph, Entra and managed-identity endpoints, app runtimes.

Imported only by tests, the demo and `migrator sim`; production code never depends on it.
"""

"""The only package that imports azure.* or msgraph: profiles, the client factory, adapters."""

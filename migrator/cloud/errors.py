"""Errors of the cloud layer: the only ones code above `cloud/` needs to know."""

from __future__ import annotations


class CloudError(Exception):
    """Base of every error the cloud layer raises; messages are one line and hold no secret."""


class CloudConfigError(CloudError):
    """A cloud profile or credential setting that cannot be used."""

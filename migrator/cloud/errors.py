"""Errors of the cloud layer: the only ones code above `cloud/` needs to know."""

from __future__ import annotations


class CloudError(Exception):
    """Base of every error the cloud layer raises; messages are one line and hold no secret."""


class CloudConfigError(CloudError):
    """A cloud profile or credential setting that cannot be used."""


class AzureCallError(CloudError):
    """An Azure call that failed after the SDK's retries; the message is one line."""

    def __init__(self, what: str, status: int | None, code: str | None, message: str) -> None:
        parts = [p for p in (str(status) if status else None, code, message) if p]
        super().__init__(f"{what}: {' '.join(parts)}")
        self.what = what
        self.status = status
        self.code = code

    @property
    def forbidden(self) -> bool:
        return self.status in (401, 403)


class SignInError(CloudError):
    """The credential could not get a token (wrong secret, no credential configured, ...)."""

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

    @property
    def transient(self) -> bool:
        """Throttled, a server error or a dropped connection: the same call may succeed later
        (the SDK has retried already; callers that must finish retry once more, bounded)."""
        return self.status is None or self.status in (408, 429, 500, 502, 503, 504)


class UntrustedEndpoint(AzureCallError):
    """The TLS certificate of the endpoint could not be verified: a set-up fault (a missing CA
    bundle, an intercepting proxy), not a passing one, so it is not tried again."""

    @property
    def transient(self) -> bool:
        return False


class SignInError(CloudError):
    """The credential could not get a token (wrong secret, no credential configured, ...).

    `transient`: the token endpoint was unreachable or answered 429/5xx (after azure-core's
    own retries), so the same sign-in may succeed in a moment; a refusal by Entra (an AADSTS
    error) or no credential at all is not."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class PrincipalNotReplicated(AzureCallError):
    """A principal made moments ago is not yet known where the call landed (Entra replication
    delay: `PrincipalNotFound`, "does not exist"). Not a failure of the request itself: the
    caller waits and tries again, for a bounded time."""


class InvalidResourceId(CloudError, ValueError):
    """A string that is not the kind of ARM resource id the call needs (site, vault, ...)."""

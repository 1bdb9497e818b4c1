"""Every error Easel raises on purpose, in one tree.

Each class carries a message that is safe to show to the person who asked (no keys, no tokens, no raw
provider text beyond what helps them) and structured fields for code that wants to branch on it::

    EaselError                      anything Easel raises on purpose; .message is one friendly sentence
    ├── ConfigError                 a setting is missing or wrong; .variable names what to set
    ├── RequestError                the request cannot be served as asked: the user changes it (CLI exit 2)
    │   ├── InvalidOption           an option the model does not take, checked before any network call; .param
    │   ├── BadImage                an input image or mask is unusable (empty, not an image, too large, ...)
    │   ├── ModelUnavailable        unknown, shut down or not served model; .replacement when one exists
    │   ├── BudgetExceeded          a spending budget has no room; .remaining, .limit, .resets_at
    │   ├── BadRequest              the provider refused the parameters (HTTP 400 and friends)
    │   ├── ContentRejected         the provider's safety system refused; .categories, .stage (input/output)
    │   ├── ImageGone               a stored result image is gone from disk and from Discord
    │   ├── QueueFull               the user already has as many requests waiting as allowed; nothing charged
    │   └── JobCancelled            a waiting job was cancelled (❌ or Cancel) or cannot resume; nothing charged
    └── ProviderError               the provider could not do it right now: not the user's fault (CLI exit 1);
        │                           .maybe_billed when it had the whole request and may have billed it
        ├── AuthenticationFailed    401: the API key is missing, wrong or revoked
        ├── PermissionDenied        403: e.g. the organisation must be verified for this model
        ├── RateLimited             429 rate_limit_exceeded; .retry_after seconds when the provider said
        ├── QuotaExhausted          insufficient_quota / billing_hard_limit_reached: the admin must top up
        ├── ProviderUnavailable     5xx, connection failures, malformed answers
        │   └── StreamInterrupted   a streamed answer broke off before the final image
        └── ProviderTimeout         no answer in time

`bot.api.http.error_from_response` is the single place that maps an HTTP status and the body's
`error.type` / `error.code` onto these classes; nothing matches on message text.
"""

from __future__ import annotations

import datetime as dt

QUOTE_LIMIT = 40
"""Characters of a member's own text that an error sentence quotes back (Discord caps a reply at 2,000)."""


def quoted(value: str, limit: int = QUOTE_LIMIT) -> str:
    """`value` as an error sentence quotes it (`repr`), cut to `limit` characters with an ellipsis."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 2] + "…" + text[0]


class EaselError(Exception):
    """Base class. `message` is one friendly sentence; provider details ride along as fields."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.request_id = request_id

    def __str__(self) -> str:
        return self.message


class ConfigError(EaselError):
    """A setting is missing or invalid; `variable` names the environment variable to set."""

    def __init__(self, message: str, *, variable: str | None = None) -> None:
        super().__init__(message)
        self.variable = variable


class RequestError(EaselError):
    """The request cannot be served as asked; the user has to change it."""


class InvalidOption(RequestError):
    """An option the chosen model does not take. `param` names it (prompt, size, quality, ...)."""

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message, status=status, code=code, request_id=request_id)
        self.param = param


class BadImage(RequestError):
    """An input image or mask cannot be used."""


class ModelUnavailable(RequestError):
    """The model is unknown, shut down, or not served by this provider."""

    def __init__(
        self,
        message: str,
        *,
        model: str | None = None,
        replacement: str | None = None,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message, status=status, code=code, request_id=request_id)
        self.model = model
        self.replacement = replacement


class BudgetExceeded(RequestError):
    """A spending budget has no room for this request; says which, what is left and when it resets."""

    def __init__(
        self,
        message: str,
        *,
        estimate: int = 0,
        remaining: int = 0,
        limit: int = 0,
        scope: str | None = None,
        period: str | None = None,
        resets_at: dt.datetime | None = None,
    ) -> None:
        super().__init__(message, code="budget_exceeded")
        self.estimate = estimate
        self.remaining = remaining
        self.limit = limit
        self.scope = scope
        self.period = period
        self.resets_at = resets_at


class BadRequest(RequestError):
    """The provider refused the request's parameters."""


class ContentRejected(RequestError):
    """The provider's safety system refused the prompt, an input image or the result."""

    def __init__(
        self,
        message: str,
        *,
        categories: tuple[str, ...] = (),
        stage: str | None = None,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message, status=status, code=code, request_id=request_id)
        self.categories = categories
        self.stage = stage


class ImageGone(RequestError):
    """A stored result image is no longer on disk and its Discord attachment cannot be fetched back."""

    def __init__(
        self,
        message: str = "That image is no longer stored and its Discord attachment is gone; generate it again.",
    ) -> None:
        super().__init__(message, code="image_gone")


class QueueFull(RequestError):
    """The user already has as many requests waiting as allowed; refused before anything is reserved."""

    def __init__(self, message: str = "You have too many requests waiting; ask again once one has started.") -> None:
        super().__init__(message, code="queue_full")


class JobCancelled(RequestError):
    """A job was cancelled before its request went out (or could not be resumed); its money is returned."""

    def __init__(self, message: str = "Cancelled; nothing was charged.") -> None:
        super().__init__(message, code="cancelled")


class ProviderError(EaselError):
    """The provider could not serve the request now; trying later or fixing the account helps.

    `maybe_billed` is true when the provider had the whole request and may have made, and billed, the
    images although no usable answer came back (no answer in time, a connection that broke while the
    answer was read, a success whose body could not be read): the ledger then keeps the estimate as an
    unknown charge instead of refunding it.
    """

    def __init__(
        self,
        message: str,
        *,
        maybe_billed: bool = False,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message, status=status, code=code, request_id=request_id)
        self.maybe_billed = maybe_billed


class AuthenticationFailed(ProviderError):
    """The API key was refused."""


class PermissionDenied(ProviderError):
    """The account may not use this model or feature."""


class RateLimited(ProviderError):
    """Too many requests; `retry_after` is the provider's hint in seconds, when it gave one."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message, status=status, code=code, request_id=request_id)
        self.retry_after = retry_after


class QuotaExhausted(ProviderError):
    """The account is out of credit or hit its billing limit."""


class ProviderUnavailable(ProviderError):
    """The provider is down, overloaded, unreachable or answered something we cannot read."""


class StreamInterrupted(ProviderUnavailable):
    """A streamed answer broke off before its final image."""


class ProviderTimeout(ProviderError):
    """No answer in time. `maybe_billed` is true when the provider had the whole request."""

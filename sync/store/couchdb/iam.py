"""Cloudant IAM bearer tokens: fetched off the event loop, cached until near expiry.

IBM Cloudant (Gen 2) accepts only IAM authentication: every request carries
``Authorization: Bearer <token>``, the token obtained from an API key at IBM's
IAM token endpoint
(https://cloud.ibm.com/docs/account?topic=account-iamtoken_from_apikey)::

    POST https://iam.cloud.ibm.com/identity/token
    Content-Type: application/x-www-form-urlencoded

    grant_type=urn:ibm:params:oauth:grant-type:apikey&apikey=<API key>

    200 {"access_token": "<JWT>", "refresh_token": "...", "token_type": "Bearer",
         "expires_in": 3600, "expiration": <epoch seconds>, "scope": "ibm openid"}

The request itself is made by IBM's ``ibm-cloud-sdk-core``
(``IAMTokenManager.request_token``), which is synchronous (``requests``), so it
runs on one worker thread of our own.  Its ``get_token()`` cache is not used:
it reads the lifetime from the JWT's claims in whole wall-clock seconds, treats
a token as expired 10 s early (so a token living under 10 s is fetched anew on
every call), and after a failed fetch it makes the next caller sleep-poll for
up to 60 s before trying again.  The cache, and when to refresh, live here,
timed by ``expires_in`` on a monotonic clock.

A failure to get a token is :class:`sync.errors.ServiceUnavailable` (503) with
a reason naming what went wrong; the API key never appears in it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeGuard
from urllib.parse import quote_plus

import requests
import structlog
from ibm_cloud_sdk_core import ApiException  # type: ignore[import-untyped]
from ibm_cloud_sdk_core.authenticators import IAMAuthenticator  # type: ignore[import-untyped]

from sync.config import DEFAULT_TOKEN_URL
from sync.errors import ServiceUnavailable

# The sdk appends this path to whatever URL it is given (after stripping it if present).
TOKEN_PATH = "/identity/token"
# IBM's tokens live an hour; asking for a new one 5 minutes early leaves room for a slow IAM.
DEFAULT_REFRESH_MARGIN = 300.0
DEFAULT_TIMEOUT = 30.0
# A short-lived token is refreshed after 80% of its life at the latest (the sdk's rule too).
MAX_MARGIN_SHARE = 0.2
MESSAGE_LIMIT = 200

log = structlog.get_logger("fieldsync")


@dataclass(frozen=True)
class _Token:
    header: str  # "Bearer <access_token>"
    refresh_at: float  # on the source's clock: hand out until then
    expires_at: float  # on the source's clock: still usable until then if a refresh fails


class IamTokenSource:
    """``Authorization`` header values for Cloudant, from an IBM Cloud API key.

    ``authorization()`` fetches a token on first use and caches it until
    ``refresh_margin`` seconds (at most a fifth of its lifetime) before it
    expires; concurrent callers share one fetch.  When a refresh fails while
    the cached token is still valid, that token is handed out and the next
    call tries again.  ``invalidate()`` drops the cached token (the server
    answered 401).  ``clock`` is a monotonic clock in seconds, swappable in tests.
    """

    def __init__(
        self,
        apikey: str,
        token_url: str | None = None,
        *,
        refresh_margin: float = DEFAULT_REFRESH_MARGIN,
        timeout: float = DEFAULT_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not apikey.strip():
            raise ValueError("The Cloudant IAM API key is empty.")
        if refresh_margin < 0 or timeout <= 0:
            raise ValueError("refresh_margin must be >= 0 and timeout > 0.")
        # IAMAuthenticator checks the key's shape (no surrounding quotes or braces).
        self._manager = IAMAuthenticator(apikey, url=token_url or DEFAULT_TOKEN_URL).token_manager
        self._manager.http_config = {"timeout": timeout}
        self._apikey = apikey  # kept only to scrub it from the endpoint's error messages
        self._url: str = self._manager.url + TOKEN_PATH
        self._margin = refresh_margin
        self._timeout = timeout
        self._clock = clock
        self._token: _Token | None = None
        self._refresh: asyncio.Task[_Token] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cloudant-iam")
        self._closed = False

    @property
    def token_url(self) -> str:
        """The endpoint tokens are fetched from."""
        return self._url

    async def authorization(self) -> str:
        """The ``Authorization`` header value: ``Bearer <token>``.

        Raises :class:`ServiceUnavailable` when no usable token can be had.
        """
        token = self._token
        if token is not None and self._clock() < token.refresh_at:
            return token.header
        # Shielded: a caller that gives up does not cancel the fetch the others wait for.
        token = await asyncio.shield(self._refreshing())
        return token.header

    def invalidate(self) -> None:
        """Forget the cached token: the next ``authorization()`` fetches a new one."""
        self._token = None

    async def close(self) -> None:
        """Stop a fetch under way and let the worker thread go."""
        self._closed = True
        refresh = self._refresh
        if refresh is not None:
            refresh.cancel()
            await asyncio.gather(refresh, return_exceptions=True)
        # A request already on the thread ends by itself, at the latest after `timeout`.
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _refreshing(self) -> asyncio.Task[_Token]:
        if self._closed:
            raise RuntimeError("IamTokenSource is closed.")
        if self._refresh is None:
            self._refresh = asyncio.get_running_loop().create_task(self._refresh_token())
            self._refresh.add_done_callback(_consume_outcome)
        return self._refresh

    async def _refresh_token(self) -> _Token:
        try:
            try:
                token = await self._fetch()
            except ServiceUnavailable as exc:
                # Read after the failure: an invalidate() meanwhile means "do not reuse it".
                stale = self._token
                if stale is None or self._clock() >= stale.expires_at:
                    raise
                log.warning("cloudant_iam_refresh_failed", reason=exc.reason)
                return stale
            self._token = token
            return token
        finally:
            self._refresh = None

    async def _fetch(self) -> _Token:
        started = self._clock()
        loop = asyncio.get_running_loop()
        answer = await loop.run_in_executor(self._executor, self._request_token)
        return self._token_from(answer, started)

    def _request_token(self) -> Any:
        """On the worker thread: one POST to the token endpoint, failures translated."""
        try:
            return self._manager.request_token()
        except ApiException as exc:
            # Not chained: the sdk's exception text is the endpoint's body, which may echo the key.
            raise ServiceUnavailable(self._refusal(exc.status_code, exc.message)) from None
        except requests.Timeout as exc:
            waited = f"{self._timeout:g} s"
            reason = f"Cloudant IAM token endpoint {self._url} did not answer within {waited}."
            raise ServiceUnavailable(reason) from exc
        except requests.ConnectionError as exc:
            reason = f"Cloudant IAM token endpoint {self._url} is unreachable ({_os_cause(exc)})."
            raise ServiceUnavailable(reason) from exc
        except requests.RequestException as exc:  # e.g. a 200 whose body is not JSON
            reason = f"Cloudant IAM token endpoint {self._url} gave an unreadable answer."
            raise ServiceUnavailable(reason) from exc

    def _refusal(self, status: int, message: object) -> str:
        if status in (400, 401, 403):
            what = f"refused the API key ({status})"
        elif status == 429:
            what = "is rate limiting token requests (429)"
        elif status >= 500:
            what = f"failed ({status})"
        else:
            what = f"answered {status}"
        detail = self._scrubbed(message)
        return f"Cloudant IAM token endpoint {what}" + (f": {detail}" if detail else ".")

    def _scrubbed(self, message: object) -> str:
        text = " ".join(str(message or "").split())
        for form in {self._apikey, quote_plus(self._apikey)}:
            text = text.replace(form, "[API key]")
        return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 1] + "…"

    def _token_from(self, answer: Any, started: float) -> _Token:
        access = answer.get("access_token") if isinstance(answer, dict) else None
        if not isinstance(access, str) or not access:
            raise ServiceUnavailable(
                f"Cloudant IAM token endpoint {self._url} answered without an access_token."
            )
        lifetime = _lifetime(answer)
        if lifetime is None:
            raise ServiceUnavailable(
                f"Cloudant IAM token endpoint {self._url} answered without a usable "
                "expires_in or expiration."
            )
        margin = min(self._margin, lifetime * MAX_MARGIN_SHARE)
        return _Token(
            header=f"Bearer {access}",
            refresh_at=started + lifetime - margin,
            expires_at=started + lifetime,
        )


def _lifetime(answer: dict[str, Any]) -> float | None:
    """Seconds the token lives: ``expires_in``, else ``expiration`` (epoch) minus now."""
    expires_in = answer.get("expires_in")
    if _is_number(expires_in) and expires_in > 0:
        return float(expires_in)
    expiration = answer.get("expiration")
    left = float(expiration) - time.time() if _is_number(expiration) else 0.0
    return left if left > 0 else None


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _os_cause(exc: BaseException) -> str:
    """The operating system's words for a failed connection (refused, no such host…)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        seen = seen.__cause__ or seen.__context__
    return "connection failed"


def _consume_outcome(task: asyncio.Task[_Token]) -> None:
    # Every caller may have given up; the outcome is read so asyncio does not log it as lost.
    if not task.cancelled():
        task.exception()

"""The STS URLs this server trusts: no auth method can point anywhere else, and no login is sent anywhere else.

What an ``aws_iam`` login trusts is STS's answer, so the STS URL is pinned by the operator, never chosen by
whoever may edit an auth method (``update`` on it would otherwise let them answer its logins from a stub of
their own, or probe internal hosts). AWS's public endpoints are always allowed: the global one and every
regional and FIPS one, in the standard, China and GovCloud partitions. ``cedarkey serve --allowed-sts-url URL``
adds more (a VPC endpoint, a local stand-in); a ``*`` stands for exactly one DNS label of the host.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from cedarkey.engine import ModelError
from cedarkey.engine.auth_method import canonical_sts_url

AWS_STS_URLS = (
    "https://sts.amazonaws.com/",
    "https://sts.*.amazonaws.com/",
    "https://sts-fips.*.amazonaws.com/",
    "https://sts.*.amazonaws.com.cn/",
)

_LABEL = "[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_PLACEHOLDER = "wildcard-label"


def allowed_entry(entry: str) -> str:
    """An allow-list entry in canonical form; ValueError when it is not an STS URL (``*`` a whole label)."""
    if _PLACEHOLDER in entry:
        raise ValueError(f"{entry!r}: not an STS URL")
    try:
        canonical = canonical_sts_url(entry.replace("*", _PLACEHOLDER))
    except ModelError as exc:
        raise ValueError(f"{entry!r}: {exc.message}") from None
    host = urlsplit(canonical).hostname or ""
    if canonical.count(_PLACEHOLDER) != host.split(".").count(_PLACEHOLDER):
        raise ValueError(f"{entry!r}: '*' may only stand for a whole label of the host")
    return canonical.replace(_PLACEHOLDER, "*")


class UntrustedStsUrl(ModelError):
    """A well-formed STS URL this server does not trust: refused as a permission, not as bad syntax."""

    code = "UntrustedStsUrl"


class StsUrls:
    def __init__(self, extra: Iterable[str] = ()) -> None:
        self.entries = tuple(dict.fromkeys([*AWS_STS_URLS, *(allowed_entry(e) for e in extra)]))
        alternatives = "|".join(re.escape(e).replace(r"\*", _LABEL) for e in self.entries)
        self._pattern = re.compile(f"(?:{alternatives})")

    def allows(self, url: str) -> bool:
        """Whether ``url`` (canonical, as auth methods hold it) is one of the allowed STS URLs."""
        return self._pattern.fullmatch(url) is not None

    def check(self, url: str | None) -> None:
        """ModelError(``sts-url``) for an auth method whose STS URL is not allowed here."""
        if url is not None and not self.allows(url):
            raise UntrustedStsUrl(
                "sts-url",
                f"{url} is not an STS URL this server trusts (AWS's endpoints, or one given to "
                "cedarkey serve --allowed-sts-url)",
            )

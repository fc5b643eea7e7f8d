"""Share links: a URL that reaches one port of one Hopx kernel's sandbox without a Jupyter login,
until it expires, is revoked, or its kernel ends.

The link's secret is its token; the server keeps only the token's SHA-256, so neither its memory
nor its log holds a usable link. Pure bookkeeping with an injected clock: the handlers
(hopx_kernel.proxy, hopx_kernel.handlers) do the HTTP.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

# Links each kernel may have at once: each one is a way into its sandbox to keep track of.
MAX_LINKS_PER_KERNEL: Final = 32


class ShareLinkError(ValueError):
    """A link that cannot be made as asked; the message says why and what would do."""


@dataclass(frozen=True)
class ShareLink:
    id: str
    kernel_id: str
    port: int
    created_by: str
    created_at: float
    expires_at: float
    token_hash: str = field(repr=False)
    # Whether the app is sent the whole path, link prefix and all (see AbsoluteProxyHandler): for
    # an app told at its start to live under the link's path.
    absolute: bool = False

    def model(self) -> dict[str, Any]:
        """What the REST API shows of it: everything but the token."""
        return {
            "id": self.id,
            "kernel_id": self.kernel_id,
            "port": self.port,
            "created_by": self.created_by,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "absolute": self.absolute,
        }


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ShareLinks:
    """The server's share links; safe to use from any thread."""

    def __init__(
        self,
        lifetime: float,
        max_lifetime: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.lifetime = lifetime
        self.max_lifetime = max_lifetime
        self._clock = clock
        self._lock = threading.Lock()
        self._by_hash: dict[str, ShareLink] = {}

    def create(
        self,
        kernel_id: str,
        port: int,
        user: str,
        seconds: float | None = None,
        *,
        absolute: bool = False,
    ) -> tuple[ShareLink, str]:
        """A new link and its token (shown once, never kept)."""
        seconds = self.lifetime if seconds is None else seconds
        if not 0 < seconds <= self.max_lifetime:
            msg = (
                f"a share link lasts more than 0 and at most {self.max_lifetime:.0f} seconds "
                f'(max_share_link_lifetime), e.g. {{"port": {port}, "expires_in": 3600}}'
            )
            raise ShareLinkError(msg)
        if not 0 < port <= 65535:
            msg = f'port must be 1-65535, e.g. {{"port": 8050}}, not {port}'
            raise ShareLinkError(msg)
        token = secrets.token_urlsafe(32)
        now = self._clock()
        link = ShareLink(
            id=secrets.token_hex(8),
            kernel_id=kernel_id,
            port=port,
            created_by=user,
            created_at=now,
            expires_at=now + seconds,
            token_hash=token_hash(token),
            absolute=absolute,
        )
        with self._lock:
            self._forget_expired(now)
            if len(self._of(kernel_id)) >= MAX_LINKS_PER_KERNEL:
                msg = f"kernel {kernel_id} has {MAX_LINKS_PER_KERNEL} share links; revoke one"
                raise ShareLinkError(msg)
            self._by_hash[link.token_hash] = link
        return link, token

    def find(self, token: str) -> ShareLink | None:
        """The live link `token` opens, if any."""
        with self._lock:
            link = self._by_hash.get(token_hash(token))
            if link is None:
                return None
            if link.expires_at <= self._clock():
                del self._by_hash[link.token_hash]
                return None
            return link

    def of_kernel(self, kernel_id: str) -> list[ShareLink]:
        with self._lock:
            self._forget_expired(self._clock())
            return sorted(self._of(kernel_id), key=lambda link: link.created_at)

    def revoke(self, kernel_id: str, link_id: str) -> ShareLink | None:
        with self._lock:
            for link in self._of(kernel_id):
                if link.id == link_id:
                    del self._by_hash[link.token_hash]
                    return link
        return None

    def forget_kernel(self, kernel_id: str) -> None:
        """Its kernel has ended: its links die with it."""
        with self._lock:
            for link in self._of(kernel_id):
                del self._by_hash[link.token_hash]

    def _of(self, kernel_id: str) -> list[ShareLink]:
        return [link for link in self._by_hash.values() if link.kernel_id == kernel_id]

    def _forget_expired(self, now: float) -> None:
        for key in [k for k, link in self._by_hash.items() if link.expires_at <= now]:
            del self._by_hash[key]

"""Share link bookkeeping (hopx_kernel.share_links) with a fake clock: lifetimes and their cap,
tokens kept only as hashes, revocation, and links dying with their kernel."""

from __future__ import annotations

import pytest

from hopx_kernel.share_links import MAX_LINKS_PER_KERNEL, ShareLinkError, ShareLinks, token_hash


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def links(clock: Clock) -> ShareLinks:
    return ShareLinks(lifetime=3600, max_lifetime=7200, clock=clock)


def test_a_link_opens_until_it_expires() -> None:
    clock = Clock()
    registry = links(clock)
    link, token = registry.create("k1", 8050, "alice")
    assert (link.expires_at, link.port, link.created_by) == (4600, 8050, "alice")
    assert registry.find(token) == link
    clock.now = 4599.9
    assert registry.find(token) == link
    clock.now = 4600
    assert registry.find(token) is None
    assert registry.of_kernel("k1") == []


def test_only_the_tokens_hash_is_kept() -> None:
    registry = links(Clock())
    link, token = registry.create("k1", 8050, "alice")
    assert link.token_hash == token_hash(token)
    assert token not in repr(link)
    assert token not in str(link.model())
    assert registry.find(token[:-1]) is None


def test_lifetimes_are_capped_and_ports_checked() -> None:
    registry = links(Clock())
    assert registry.create("k1", 80, "a", 7200)[0].expires_at == 1000 + 7200
    for seconds in (0, -5, 7201):
        with pytest.raises(ShareLinkError, match="max_share_link_lifetime"):
            registry.create("k1", 80, "a", seconds)
    with pytest.raises(ShareLinkError, match="port must be 1-65535"):
        registry.create("k1", 70000, "a")


def test_revoked_and_kernel_ended_links_open_nothing() -> None:
    registry = links(Clock())
    first, first_token = registry.create("k1", 8050, "alice")
    _, second_token = registry.create("k1", 8051, "alice")
    _, other_token = registry.create("k2", 8050, "bob")
    assert registry.revoke("k2", first.id) is None  # not k2's to revoke
    assert registry.revoke("k1", first.id) == first
    assert registry.find(first_token) is None
    registry.forget_kernel("k1")
    assert registry.find(second_token) is None
    assert registry.find(other_token) is not None


def test_a_kernel_has_a_bounded_number_of_links() -> None:
    registry = links(Clock())
    for port in range(MAX_LINKS_PER_KERNEL):
        registry.create("k1", 8000 + port, "alice")
    with pytest.raises(ShareLinkError, match="revoke one"):
        registry.create("k1", 9000, "alice")
    registry.create("k2", 9000, "alice")

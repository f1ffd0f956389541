"""The interface every byte-weighted eviction policy of the memory tier implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Literal

PolicyName = Literal["lru", "tinylfu"]


class EvictionPolicy(ABC):
    """Interface of a byte-weighted eviction policy.

    Frequency-aware policies count a request once: either as a hit in :meth:`access`
    or as a miss in :meth:`admit`. A lookup that misses must therefore be followed by
    ``admit`` (not by a second ``access``) for the key's popularity to be recorded.

    Pinned keys count toward :attr:`used_bytes` but are never chosen as victims. When
    the unpinned bytes cannot make room for a key, ``admit`` refuses it instead of
    evicting a pinned key.
    """

    capacity_bytes: int

    @property
    @abstractmethod
    def used_bytes(self) -> int:
        """Sum of the sizes of all resident keys (pinned ones included)."""

    @abstractmethod
    def access(self, key: str) -> bool:
        """Record a hit on ``key``; return whether it is resident.

        A miss records nothing: the following :meth:`admit` counts the request.
        """

    @abstractmethod
    def admit(self, key: str, size: int) -> tuple[bool, list[str]]:
        """Insert ``key`` (or update its size) and return ``(admitted, evicted_keys)``.

        ``evicted_keys`` never contains ``key`` itself and always lists keys the caller
        must drop, whether or not ``key`` was admitted. When ``admitted`` is False the
        caller must not store the value. A key larger than the capacity (minus the
        pinned bytes) is never admitted. A refused update leaves the previous entry and
        its size in place, so the caller keeps its old value.
        """

    @abstractmethod
    def remove(self, key: str) -> None:
        """Forget ``key`` (the caller deleted it: purge, expiry). Unknown keys are ignored."""

    @abstractmethod
    def pin(self, key: str, pinned: bool) -> None:
        """Pin or unpin a resident key. Ignored for keys that are not resident."""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def __contains__(self, key: object) -> bool: ...


def check_size(size: int) -> None:
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}")

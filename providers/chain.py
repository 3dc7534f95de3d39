"""ProviderChain: the providers one call may use, the primary first, then the fallbacks.

One value says which providers a call has, from the command line (``--provider`` and
each ``--fallback``) through the ``Gateway`` and ``run_call`` to the supervisor that
fails over along it, in order.  A provider alone is the chain of that one provider.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from .base import SttProvider, finalize_timeout

__all__ = ["ProviderChain"]


class ProviderChain:
    """``ProviderChain(primary, *fallbacks)``: immutable, never empty, iterates primary
    first.  The same provider object may appear more than once (each is tried in turn)."""

    __slots__ = ("_providers",)

    def __init__(self, primary: SttProvider, *fallbacks: SttProvider) -> None:
        self._providers: tuple[SttProvider, ...] = (primary, *fallbacks)

    @classmethod
    def of(cls, providers: ProviderChain | SttProvider) -> ProviderChain:
        """``providers`` itself when it is a chain; a lone provider as the chain of it."""
        return providers if isinstance(providers, ProviderChain) else cls(providers)

    @property
    def primary(self) -> SttProvider:
        return self._providers[0]

    @property
    def fallbacks(self) -> tuple[SttProvider, ...]:
        """The providers after the primary, in the order they are failed over to."""
        return self._providers[1:]

    def __iter__(self) -> Iterator[SttProvider]:
        return iter(self._providers)

    def __len__(self) -> int:
        return len(self._providers)

    def __getitem__(self, index: int) -> SttProvider:
        return self._providers[index]

    def map(self, wrap: Callable[[SttProvider], SttProvider]) -> ProviderChain:
        """The chain of ``wrap(provider)`` for each provider, in the same order."""
        return ProviderChain(*map(wrap, self._providers))

    def finalize_timeout(self) -> float | None:
        """The longest ``finalize_timeout`` a provider of the chain declares
        (``providers.base.SlowAnswers``), or None when none declares one."""
        declared = [t for t in map(finalize_timeout, self._providers) if t]
        return max(declared, default=None)

    def __repr__(self) -> str:
        return f"ProviderChain({', '.join(p.name for p in self._providers)})"

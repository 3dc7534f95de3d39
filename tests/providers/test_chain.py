"""ProviderChain: the one value that says which providers a call has, primary first."""

from __future__ import annotations

import attrs
import pytest

from gateway.app import Gateway
from gateway.config import Settings
from providers.chain import ProviderChain
from providers.scripted import ScriptedProvider


@attrs.define
class Declaring(ScriptedProvider):
    """A scripted provider that declares its answer times (``providers.base.SlowAnswers``)."""

    answer_timeout: float | None = None
    finalize_timeout: float | None = None


def test_the_chain_is_the_primary_then_the_fallbacks_in_order():
    a, b, c = (ScriptedProvider(name=n) for n in "abc")
    chain = ProviderChain(a, b, c)
    assert list(chain) == [a, b, c] and len(chain) == 3 and chain[2] is c
    assert chain.primary is a and chain.fallbacks == (b, c)
    assert ProviderChain(a).fallbacks == () and list(ProviderChain(a, a)) == [a, a]
    assert repr(chain) == "ProviderChain(a, b, c)"
    with pytest.raises(TypeError):
        ProviderChain()  # type: ignore[call-arg]


def test_a_provider_alone_is_the_chain_of_it_and_a_chain_stays_itself():
    a, b = ScriptedProvider(name="a"), ScriptedProvider(name="b")
    assert list(ProviderChain.of(a)) == [a]
    chain = ProviderChain(a, b)
    assert ProviderChain.of(chain) is chain


def test_a_wrapped_chain_keeps_its_order():
    chain = ProviderChain(*(ScriptedProvider(name=n) for n in "abc"))
    wrapped = chain.map(lambda p: attrs.evolve(p, name=p.name.upper()))
    assert [p.name for p in wrapped] == ["A", "B", "C"] and [p.name for p in chain] == ["a", "b", "c"]


def test_the_chain_finalizes_within_the_longest_time_any_of_its_providers_declares():
    assert ProviderChain(ScriptedProvider()).finalize_timeout() is None
    assert ProviderChain(ScriptedProvider(), Declaring(finalize_timeout=None)).finalize_timeout() is None
    chain = ProviderChain(Declaring(finalize_timeout=3.0), ScriptedProvider(), Declaring(finalize_timeout=40.0))
    assert chain.finalize_timeout() == 40.0


def test_the_gateway_serves_calls_with_the_chain_it_was_given():
    primary, fallback = ScriptedProvider(name="primary"), ScriptedProvider(name="fallback")
    chain = ProviderChain(primary, fallback)
    gateway = Gateway(Settings(port=0, provider="scripted", max_busy=None), chain, [])
    assert gateway.chain is chain and gateway.stream_endpoint.chain is chain
    alone = Gateway(Settings(port=0, provider="scripted", max_busy=None), primary, [])
    assert list(alone.chain) == [primary]

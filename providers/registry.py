"""Provider registry: the built-ins plus third-party providers from the entry-point
group ``earpiece.providers``.

Each provider package exposes ``SPEC: ProviderSpec``.  A third-party distribution
registers ``[project.entry-points."earpiece.providers"] myname = "mypkg:SPEC"``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points

import attrs

from .base import AudioFormat, SttProvider
from .errors import ProviderConfigError

__all__ = ["ProviderSpec", "BUILTIN_PROVIDERS", "available_providers", "get_spec", "create_provider"]


@attrs.frozen
class ProviderSpec:
    """What the registry knows about a provider before it is configured.

    ``factory(env)`` builds a configured provider from environment-style settings
    (``<NAME>_API_KEY``, ``<NAME>_BASE_URL``, vendor options) and raises
    ``ProviderConfigError`` with a one-line fix when something is missing or wrong.
    """

    name: str
    description: str
    audio_format: AudioFormat
    factory: Callable[[Mapping[str, str]], SttProvider]
    key_env: str | None = None  # None: needs no credentials
    offline: bool = False

    def credentials_set(self, env: Mapping[str, str]) -> bool:
        return self.key_env is None or bool(env.get(self.key_env))


# name -> module holding SPEC; imported lazily so one broken vendor never blocks the rest
BUILTIN_PROVIDERS: dict[str, str] = {
    "whisper": "providers.whisper",
    "local": "providers.local",
    "scripted": "providers.scripted",
    "elevenlabs": "providers.elevenlabs",
    "mistral": "providers.mistral",
    "deepgram": "providers.deepgram",
    "assemblyai": "providers.assemblyai",
    "openai": "providers.openai",
}


def _builtin_spec(name: str) -> ProviderSpec | None:
    module_name = BUILTIN_PROVIDERS.get(name)
    if module_name is None:
        return None
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:  # vendor package not present in this build
            return None
        raise
    return getattr(module, "SPEC", None)


def _entry_point_specs() -> dict[str, ProviderSpec]:
    found: dict[str, ProviderSpec] = {}
    for ep in entry_points(group="earpiece.providers"):
        spec = ep.load()
        if not isinstance(spec, ProviderSpec):
            raise ProviderConfigError(ep.name, f"entry point {ep.value} is not a ProviderSpec")
        found[ep.name] = spec
    return found


def available_providers() -> dict[str, ProviderSpec]:
    specs: dict[str, ProviderSpec] = {}
    for name in BUILTIN_PROVIDERS:
        spec = _builtin_spec(name)
        if spec is not None:
            specs[name] = spec
    for name, spec in _entry_point_specs().items():
        specs.setdefault(name, spec)
    return specs


def get_spec(name: str) -> ProviderSpec:
    spec = _builtin_spec(name) if name in BUILTIN_PROVIDERS else _entry_point_specs().get(name)
    if spec is None:
        known = ", ".join(sorted(available_providers()))
        raise ProviderConfigError(name, f"unknown provider {name!r}; choose one of: {known}")
    return spec


def create_provider(name: str, env: Mapping[str, str]) -> SttProvider:
    """Configure provider ``name``; raises ``ProviderConfigError`` (one clear line)."""
    spec = get_spec(name)
    if not spec.credentials_set(env):
        raise ProviderConfigError(name, f"{spec.key_env} is not set; export it or choose another provider")
    return spec.factory(env)

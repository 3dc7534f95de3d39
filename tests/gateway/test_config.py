"""Each gateway setting is declared once (gateway/config.py): these tests hold the flags,
the variables, the per-call configuration and README to that one declaration."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from actors.config import CallConfig
from gateway.cli import build_parser, main
from gateway.config import ConfigError, Option, Settings, options
from providers.twilio import TwilioLimits

README = Path(__file__).resolve().parents[2] / "README.md"

#: a valid value for every setting with a flag, and the value it becomes
GIVEN = {
    "host": ("127.0.0.2", "127.0.0.2"), "port": ("9000", 9000), "provider": ("scripted", "scripted"),
    "fallback": ("scripted, local", ("scripted", "local")), "sinks": ("jsonl:a.jsonl", ("jsonl:a.jsonl",)),
    "max_calls": ("7", 7), "public_url": ("https://gw.example.test/", "https://gw.example.test"),
    "batch_ms": ("200", 200), "drain_timeout": ("3.5", 3.5), "log_format": ("json", "json"),
    "max_message_bytes": ("4096", 4096), "max_payload_bytes": ("1600", 1600), "max_custom_parameters": ("3", 3),
    "max_custom_parameter_chars": ("499", 499), "max_call_duration": ("60", 60.0),
    "media_idle_timeout": ("2.5", 2.5), "max_lag": ("4", 4.0), "max_busy": ("0.5", 0.5),
    "certfile": ("cert.pem", "cert.pem"), "keyfile": ("key.pem", "key.pem"), "workers": ("3", 3),
    "drain_grace": ("20", 20.0), "metrics_port": ("9100", 9100), "sink_flush_timeout": ("1.5", 1.5),
}
PAIRED = {"certfile": "keyfile", "keyfile": "certfile"}  # given only together


def _flagged() -> list[tuple[str, Option]]:
    return [(field.name, option) for field, option in options() if option.flag is not None]


@pytest.mark.parametrize(("name", "option"), _flagged(), ids=[name for name, _ in _flagged()])
def test_every_serve_flag_is_read_from_the_command_line_or_its_variable_the_flag_winning(name, option):
    raw, expected = GIVEN[name]
    argv, env = ["serve", f"{option.flag}={raw}"], {option.env: raw}
    if name in PAIRED:
        partner = PAIRED[name]
        argv.append(f"--{partner}={GIVEN[partner][0]}")
        env[f"EARPIECE_{partner.upper()}"] = GIVEN[partner][0]
    args = build_parser().parse_args(argv)
    assert getattr(Settings.from_sources(vars(args), {}), name) == expected
    assert getattr(Settings.from_sources({}, env), name) == expected
    other = "7" if name != "public_url" else "https://other.example.test"
    assert getattr(Settings.from_sources(vars(args), {option.env: other}), name) == expected
    unset = build_parser().parse_args(["serve"])
    assert getattr(Settings.from_sources(vars(unset), {option.env: ""}), name) == getattr(Settings(), name)


def test_demo_takes_the_call_settings_but_not_the_server_ones():
    demo = vars(build_parser().parse_args(["demo"]))
    assert {"provider", "fallback", "sink", "batch_ms", "drain_timeout", "max_message_bytes"} <= demo.keys()
    assert not {"host", "port", "workers", "drain_grace", "metrics_port", "certfile"} & demo.keys()


def test_the_tokens_come_from_the_environment_only_and_are_never_shown():
    env = {"TWILIO_AUTH_TOKEN": "tok-twilio-0001", "EARPIECE_API_TOKEN": "tok-api-0002"}
    settings = Settings.from_sources(vars(build_parser().parse_args(["serve"])), env)
    assert (settings.twilio_auth_token, settings.api_token) == ("tok-twilio-0001", "tok-api-0002")
    assert "tok-" not in repr(settings)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--api-token", "x"])


def test_the_default_call_configuration_is_the_call_runtimes_own():
    assert Settings().call_config() == CallConfig()
    assert Settings().call_config().twilio_limits == TwilioLimits()


def test_settings_reach_each_call():
    config = Settings(batch_ms=200, drain_timeout=7.0, max_message_bytes=4096).call_config()
    assert (config.batch_ms, config.drain_timeout, config.twilio_limits.max_message_chars) == (200, 7.0, 4096)


def test_the_provider_chain_is_the_primary_then_the_fallbacks():
    settings = Settings.from_sources({"provider": "scripted", "fallback": "local,whisper"}, {})
    assert settings.provider_chain == ("scripted", "local", "whisper")


def test_a_batch_length_is_checked_by_one_rule(capsys):
    assert main(["serve", "--provider", "scripted", "--batch-ms", "30"]) == 2
    err = capsys.readouterr().err
    assert err == "earpiece: error: --batch-ms must be a multiple of 20 between 20 and 1000, not 30\n"
    with pytest.raises(ValueError, match="batch_ms must be a multiple of 20 between 20 and 1000, not 30"):
        CallConfig(batch_ms=30)
    with pytest.raises(ConfigError, match="--batch-ms must be a multiple of 20"):
        Settings.from_sources({"batch_ms": "1020"}, {})


def test_help_ends_each_flag_with_its_declared_default(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--batch-ms BATCH_MS audio batch towards the provider, ms (100)" in text
    assert "with 1009 (65536)" in text and "--max-lag MAX_LAG also refuse" in text


def test_readme_names_every_serve_flag_with_the_declared_default():
    readme = README.read_text()
    for name, option in _flagged():
        assert f"`{option.flag}" in readme, option.flag
    shown = dict(re.findall(r"`(--[a-z-]+)[^`]*`,? \(?(\d[\d.]*|off)\b", readme))
    assert len(shown) >= 14
    defaults = {option.flag: getattr(Settings(), name) for name, option in _flagged()}
    for flag, value in shown.items():
        expected = defaults[flag]
        assert value == ("off" if expected is None else expected if isinstance(expected, str)
                         else f"{expected:g}"), flag

"""``X-Twilio-Signature``: the algorithm against known answers (gateway/security.py), then
every door of a real gateway — ``/twilio/voice``, ``/twilio/status``, the upgrade of
``/twilio/stream`` — with valid, missing, wrong and misdirected signatures."""

from __future__ import annotations

import logging
from urllib.parse import urlencode

import httpx
import pytest
import trio
import trio_websocket

from gateway.security import (
    SIGNATURE_HEADER,
    TwilioSignatureValidator,
    body_sha256,
    check_request,
    compute_signature,
    public_request_url,
    signing_string,
    url_variants,
)
from gateway.logs import printable
from gateway.simulator import post_voice_webhook, simulate_call
from gateway.twiml import parse_connect_stream
from providers.scripted import ScriptedProvider
from tests.conftest import running_gateway
from tests.helpers import ACCOUNT_SID, ListSink, call_ids, tone

CALL_LIMIT = 30  # seconds: a bound on each test, never an assertion on speed

# ----------------------------------------------------------------- known answers (§4.10)

TWILIO_TOKEN = "12345"
PROJECT_TOKEN = "f3c1b2a0d4e5f60718293a4b5c6d7e8f"

DOC_PARAMS = {"CallSid": "CA1234567890ABCDE", "Caller": "+14158675310", "Digits": "1234",
              "From": "+14158675310", "To": "+18005551212"}
LIB_PARAMS = {"CallSid": "CA1234567890ABCDE", "Caller": "+14158675309", "Digits": "1234",
              "From": "+14158675309", "To": "+18005551212"}
V1_PARAMS = {
    "AccountSid": "AC00000000000000000000000000000001",
    "ApiVersion": "2010-04-01",
    "CallSid": "CA11111111111111111111111111111111",
    "CallStatus": "ringing",
    "Caller": "+15005550006",
    "Direction": "inbound",
    "From": "+15005550006",
    "To": "+15005550001",
}
V3_PARAMS = {
    "AccountSid": "AC00000000000000000000000000000001",
    "CallSid": "CA11111111111111111111111111111111",
    "StreamSid": "MZ22222222222222222222222222222222",
    "StreamName": "MZ22222222222222222222222222222222",
    "StreamEvent": "stream-stopped",
    "Timestamp": "2025-01-01T00:00:05.000Z",
}
V4_URL = ("https://gw.example.test/twilio/stream-status?AccountSid=AC00000000000000000000000000000001"
          "&CallSid=CA11111111111111111111111111111111&StreamEvent=stream-started")
V5_BODY = b'{"StreamSid":"MZ22222222222222222222222222222222","StreamEvent":"stream-started"}'
V5_HASH = "5842450bd45e86eacb4dbc6adf5f673133212bb4f2a9611951cfdea60ef17e6b"
V0_JSON_BODY = b'{"property": "value", "boolean": true}'
V0_JSON_HASH = "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"

KNOWN_ANSWERS = [
    # (name, token, url, params, expected signature)
    ("V0 doc example", TWILIO_TOKEN, "https://example.com/myapp.php?foo=1&bar=2", DOC_PARAMS,
     "L/OH5YylLD5NRKLltdqwSvS0BnU="),
    ("V0 twilio-python", TWILIO_TOKEN, "https://mycompany.com/myapp.php?foo=1&bar=2", LIB_PARAMS,
     "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
    ("V0 twilio-python :443", TWILIO_TOKEN, "https://mycompany.com:443/myapp.php?foo=1&bar=2", LIB_PARAMS,
     "kvajT1Ptam85bY51eRf/AJRuM3w="),
    ("V0 JSON body", TWILIO_TOKEN, f"https://mycompany.com/myapp.php?foo=1&bar=2&bodySHA256={V0_JSON_HASH}", {},
     "a9nBmqA0ju/hNViExpshrM61xv4="),
    ("V1 voice webhook", PROJECT_TOKEN, "https://gw.example.test/twilio/voice", V1_PARAMS,
     "OOQAjMmDOurxhMZZp7VI1f9nov8="),
    ("V1 written with :443", PROJECT_TOKEN, "https://gw.example.test:443/twilio/voice", V1_PARAMS,
     "6MoZRT8x2Fa3b9oCAZiS37x9dUc="),
    ("V2 WebSocket", PROJECT_TOKEN, "wss://gw.example.test/twilio/media", {}, "UcGBwBy9HlQ+GE7DXHUXjalPVUo="),
    ("V2 trailing slash", PROJECT_TOKEN, "wss://gw.example.test/twilio/media/", {}, "StoQVCt/JPovx3RDQ3FwoRBZz2U="),
    ("V2 https scheme", PROJECT_TOKEN, "https://gw.example.test/twilio/media", {}, "P8srPgo2dnUsUtBWGwcBZTybxFA="),
    ("V3 status callback", PROJECT_TOKEN, "https://gw.example.test/twilio/stream-status", V3_PARAMS,
     "JE+taW4IKVuUniUFmWCPPGfmfnI="),
    ("V4 GET", PROJECT_TOKEN, V4_URL, {}, "ngvmCpPmWcROTmO/t6NL//ph9pM="),
    ("V5 JSON body", PROJECT_TOKEN, f"https://gw.example.test/twilio/json-callback?bodySHA256={V5_HASH}", {},
     "F9PL/seyH1nRFjaSVCPgWV34L5A="),
    ("V6 sort order", PROJECT_TOKEN, "https://gw.example.test/x", [("b", "2"), ("B", "1"), ("a", "x y")],
     "4McKzGmaKD/oOj5ZgptR4fe5DSM="),
]


@pytest.mark.parametrize(("name", "token", "url", "params", "expected"), KNOWN_ANSWERS,
                         ids=[row[0] for row in KNOWN_ANSWERS])
def test_compute_signature_matches_the_known_answer(name, token, url, params, expected):
    assert compute_signature(token, url, params) == expected


def test_v6_signing_string_sorts_names_by_code_point():
    assert signing_string("https://gw.example.test/x", [("b", "2"), ("B", "1"), ("a", "x y")]) == (
        "https://gw.example.test/xB1ax yb2")


def test_v1_signing_string_is_the_reference_string():
    assert signing_string("https://gw.example.test/twilio/voice", V1_PARAMS) == (
        "https://gw.example.test/twilio/voiceAccountSidAC00000000000000000000000000000001ApiVersion2010-04-01"
        "CallSidCA11111111111111111111111111111111CallStatusringingCaller+15005550006Directioninbound"
        "From+15005550006To+15005550001")


def test_v1_hmac_sha256_shared_key_variant():
    assert compute_signature(PROJECT_TOKEN, "https://gw.example.test/twilio/voice", V1_PARAMS,
                             algorithm="sha256") == "16K3qRVJCGXzJldTYRpbZtYbzWMvfP2rn+0fBcIHS+8="


@pytest.mark.parametrize(("body", "expected"), [(V5_BODY, V5_HASH), (V0_JSON_BODY, V0_JSON_HASH)])
def test_body_sha256_is_lowercase_hex(body, expected):
    assert body_sha256(body) == expected


V1 = TwilioSignatureValidator(PROJECT_TOKEN)
V0 = TwilioSignatureValidator(TWILIO_TOKEN)

VALIDATIONS = [
    # (name, check, expected verdict)
    ("V1 as signed", lambda: V1.validate("https://gw.example.test/twilio/voice", V1_PARAMS,
                                         "OOQAjMmDOurxhMZZp7VI1f9nov8="), True),
    ("V1 signature, URL seen with :443", lambda: V1.validate("https://gw.example.test:443/twilio/voice", V1_PARAMS,
                                                             "OOQAjMmDOurxhMZZp7VI1f9nov8="), True),
    ("V1 :443 signature, URL seen without port",
     lambda: V1.validate("https://gw.example.test/twilio/voice", V1_PARAMS, "6MoZRT8x2Fa3b9oCAZiS37x9dUc="), True),
    ("V1 params in another order", lambda: V1.validate(
        "https://gw.example.test/twilio/voice", list(reversed(list(V1_PARAMS.items()))),
        "OOQAjMmDOurxhMZZp7VI1f9nov8="), True),
    ("V1 a changed value", lambda: V1.validate("https://gw.example.test/twilio/voice", {**V1_PARAMS, "To": "+1"},
                                               "OOQAjMmDOurxhMZZp7VI1f9nov8="), False),
    ("V1 an added field", lambda: V1.validate("https://gw.example.test/twilio/voice", {**V1_PARAMS, "X": "1"},
                                              "OOQAjMmDOurxhMZZp7VI1f9nov8="), False),
    ("V1 wrong URL", lambda: V1.validate("https://gw.example.test/twilio/status", V1_PARAMS,
                                         "OOQAjMmDOurxhMZZp7VI1f9nov8="), False),
    ("V1 wrong host", lambda: V1.validate("https://evil.example.test/twilio/voice", V1_PARAMS,
                                          "OOQAjMmDOurxhMZZp7VI1f9nov8="), False),
    ("V1 http for https", lambda: V1.validate("http://gw.example.test/twilio/voice", V1_PARAMS,
                                              "OOQAjMmDOurxhMZZp7VI1f9nov8="), False),
    ("V1 another token", lambda: V0.validate("https://gw.example.test/twilio/voice", V1_PARAMS,
                                             "OOQAjMmDOurxhMZZp7VI1f9nov8="), False),
    ("V1 empty signature", lambda: V1.validate("https://gw.example.test/twilio/voice", V1_PARAMS, ""), False),
    ("V1 non-ASCII signature", lambda: V1.validate("https://gw.example.test/twilio/voice", V1_PARAMS,
                                                   "OOQAjMmDOurxhMZZp7VI1f9nov8é"), False),
    ("V2 as signed", lambda: V1.validate_websocket("wss://gw.example.test/twilio/media",
                                                   "UcGBwBy9HlQ+GE7DXHUXjalPVUo="), True),
    ("V2 trailing-slash retry", lambda: V1.validate_websocket("wss://gw.example.test/twilio/media",
                                                              "StoQVCt/JPovx3RDQ3FwoRBZz2U="), True),
    ("V2 seen with :443", lambda: V1.validate_websocket("wss://gw.example.test:443/twilio/media",
                                                        "UcGBwBy9HlQ+GE7DXHUXjalPVUo="), True),
    ("V2 https signature is not wss", lambda: V1.validate_websocket("wss://gw.example.test/twilio/media",
                                                                    "P8srPgo2dnUsUtBWGwcBZTybxFA="), False),
    ("V2 validated as https", lambda: V1.validate_websocket("https://gw.example.test/twilio/media",
                                                            "UcGBwBy9HlQ+GE7DXHUXjalPVUo="), False),
    ("V3 as signed", lambda: V1.validate("https://gw.example.test/twilio/stream-status", V3_PARAMS,
                                         "JE+taW4IKVuUniUFmWCPPGfmfnI="), True),
    ("V4 GET as signed", lambda: V1.validate(V4_URL, {}, "ngvmCpPmWcROTmO/t6NL//ph9pM="), True),
    ("V4 query reordered", lambda: V1.validate(
        "https://gw.example.test/twilio/stream-status?CallSid=CA11111111111111111111111111111111"
        "&AccountSid=AC00000000000000000000000000000001&StreamEvent=stream-started", {},
        "ngvmCpPmWcROTmO/t6NL//ph9pM="), False),
    ("V5 JSON as signed", lambda: V1.validate_json(
        f"https://gw.example.test/twilio/json-callback?bodySHA256={V5_HASH}", V5_BODY,
        "F9PL/seyH1nRFjaSVCPgWV34L5A="), True),
    ("V5 JSON body changed", lambda: V1.validate_json(
        f"https://gw.example.test/twilio/json-callback?bodySHA256={V5_HASH}", V5_BODY.replace(b"started", b"stopped"),
        "F9PL/seyH1nRFjaSVCPgWV34L5A="), False),
    ("V5 JSON without bodySHA256", lambda: V1.validate_json(
        "https://gw.example.test/twilio/json-callback", V5_BODY, "F9PL/seyH1nRFjaSVCPgWV34L5A="), False),
    ("V0 JSON as signed", lambda: V0.validate_json(
        f"https://mycompany.com/myapp.php?foo=1&bar=2&bodySHA256={V0_JSON_HASH}", V0_JSON_BODY,
        "a9nBmqA0ju/hNViExpshrM61xv4="), True),
    ("V0 doc example", lambda: V0.validate("https://example.com/myapp.php?foo=1&bar=2", DOC_PARAMS,
                                           "L/OH5YylLD5NRKLltdqwSvS0BnU="), True),
    ("V6 as signed", lambda: V1.validate("https://gw.example.test/x", [("a", "x y"), ("B", "1"), ("b", "2")],
                                         "4McKzGmaKD/oOj5ZgptR4fe5DSM="), True),
    ("V6 value trimmed", lambda: V1.validate("https://gw.example.test/x", [("a", "x y "), ("B", "1"), ("b", "2")],
                                             "4McKzGmaKD/oOj5ZgptR4fe5DSM="), False),
]


@pytest.mark.parametrize(("name", "check", "expected"), VALIDATIONS, ids=[row[0] for row in VALIDATIONS])
def test_validator_verdict(name, check, expected):
    assert check() is expected


def test_validator_repr_never_shows_the_token():
    assert PROJECT_TOKEN not in repr(V1)
    with pytest.raises(ValueError):
        TwilioSignatureValidator("")


@pytest.mark.parametrize(
    ("url", "slash", "expected"),
    [
        ("https://gw.example.test/twilio/voice", False,
         ("https://gw.example.test/twilio/voice", "https://gw.example.test:443/twilio/voice")),
        ("http://127.0.0.1:8080/twilio/voice?a=1", False,
         ("http://127.0.0.1/twilio/voice?a=1", "http://127.0.0.1:8080/twilio/voice?a=1")),
        ("wss://gw.example.test/twilio/stream", True,
         ("wss://gw.example.test/twilio/stream", "wss://gw.example.test:443/twilio/stream",
          "wss://gw.example.test/twilio/stream/", "wss://gw.example.test:443/twilio/stream/")),
        ("ws://[::1]:9000/s", False, ("ws://[::1]/s", "ws://[::1]:9000/s")),
    ],
)
def test_url_variants_are_with_and_without_port(url, slash, expected):
    assert url_variants(url, trailing_slash=slash) == expected


def _scope(kind: str = "http", *, scheme: str = "http", path: str = "/twilio/voice", query: bytes = b"",
           headers: list[tuple[bytes, bytes]] | None = None, method: str = "POST") -> dict:
    scope = {"type": kind, "scheme": scheme, "path": path, "raw_path": path.encode(), "query_string": query,
             "headers": headers if headers is not None else [(b"host", b"127.0.0.1:8080")],
             "server": ("127.0.0.1", 8080), "client": ("127.0.0.1", 50000)}
    if kind == "http":
        scope["method"] = method
    return scope


@pytest.mark.parametrize(
    ("scope", "public_url", "expected"),
    [
        (_scope(), None, "http://127.0.0.1:8080/twilio/voice"),
        (_scope(query=b"a=1&b=%2B1%20x"), None, "http://127.0.0.1:8080/twilio/voice?a=1&b=%2B1%20x"),
        (_scope(), "https://gw.example.test", "https://gw.example.test/twilio/voice"),
        (_scope(), "https://gw.example.test:8443/prefix", "https://gw.example.test:8443/prefix/twilio/voice"),
        (_scope("websocket", scheme="ws", path="/twilio/stream"), "https://gw.example.test",
         "wss://gw.example.test/twilio/stream"),
        (_scope("websocket", scheme="ws", path="/twilio/stream"), None, "ws://127.0.0.1:8080/twilio/stream"),
        (_scope(headers=[(b"host", b"127.0.0.1:8080"), (b"x-forwarded-proto", b"https, http"),
                         (b"x-forwarded-host", b"abc.ngrok.app, 10.0.0.1")]), None,
         "https://abc.ngrok.app/twilio/voice"),
        (_scope("websocket", scheme="ws", path="/twilio/stream",
                headers=[(b"host", b"abc.ngrok.app"), (b"x-forwarded-proto", b"https")]), None,
         "wss://abc.ngrok.app/twilio/stream"),
        (_scope(headers=[(b"host", b"gw.example.test"), (b"x-forwarded-host", b"pub.example.test")]),
         "https://configured.example.test", "https://configured.example.test/twilio/voice"),
        (_scope(headers=[]), None, "http://127.0.0.1:8080/twilio/voice"),
    ],
    ids=["host", "raw query kept", "public url", "public url port and prefix", "public url for ws",
         "ws from host", "x-forwarded first values", "ngrok upgrade is wss", "public url beats headers", "no host"],
)
def test_public_request_url_rebuilds_what_twilio_requested(scope, public_url, expected):
    assert public_request_url(scope, public_url) == expected


def test_check_request_reads_form_params_from_the_raw_body():
    url = "https://gw.example.test/twilio/voice"
    body = urlencode(V1_PARAMS).encode()
    headers = [(b"host", b"gw.example.test"), (b"content-type", b"application/x-www-form-urlencoded"),
               (b"x-twilio-signature", b"OOQAjMmDOurxhMZZp7VI1f9nov8=")]
    assert check_request(V1, _scope(headers=headers), body, "https://gw.example.test").ok
    check = check_request(V1, _scope(headers=headers), body + b"&Extra=1", "https://gw.example.test")
    assert not check.ok and check.url == url
    assert "OOQAjMmDOurxhMZZp7VI1f9nov8=" not in (check.refusal or "")


def test_check_request_refuses_a_json_body_without_body_hash():
    headers = [(b"host", b"gw.example.test"), (b"content-type", b"application/json"),
               (b"x-twilio-signature", compute_signature(PROJECT_TOKEN, "https://gw.example.test/twilio/status")
                .encode())]
    check = check_request(V1, _scope(path="/twilio/status", headers=headers), V5_BODY, "https://gw.example.test")
    assert not check.ok and "bodySHA256" in (check.refusal or "")


def test_printable_escapes_control_characters_and_clips():
    assert printable("CA1\nrefused everything") == "CA1\\nrefused everything"
    assert len(printable("x" * 1000)) <= 201


# ------------------------------------------------------------------- the doors, for real

TOKEN = "tok_3c1b2a0d4e5f60718293a4b5c6d7e8"
PUBLIC = "https://gw.example.test"


def _voice_form(call_sid: str) -> dict[str, str]:
    """The fields gateway.simulator.post_voice_webhook sends."""
    return {"AccountSid": ACCOUNT_SID, "ApiVersion": "2010-04-01", "CallSid": call_sid,
            "CallStatus": "ringing", "Called": "+15005550001", "Caller": "+15005550006",
            "Direction": "inbound", "From": "+15005550006", "To": "+15005550001"}


def _refusals(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "earpiece.gateway" and "refused" in r.getMessage()]


def _assert_one_clean_refusal(caplog: pytest.LogCaptureFixture, *secrets: str) -> str:
    refusals = _refusals(caplog)
    assert len(refusals) == 1, [r.getMessage() for r in refusals]
    line = refusals[0].getMessage()
    assert "\n" not in line
    for secret in (TOKEN, *secrets):
        if secret:
            assert secret not in line
    caplog.clear()
    return line


async def test_voice_webhook_signed_for_the_public_url_gets_twiml_and_anything_else_403(caplog):
    caplog.set_level(logging.INFO)
    call_sid = call_ids(1)[0]
    form = _voice_form(call_sid)
    good = compute_signature(TOKEN, PUBLIC + "/twilio/voice", form)
    with trio.fail_after(CALL_LIMIT):
        async with running_gateway(ScriptedProvider(), [ListSink()], public_url=PUBLIC,
                                   twilio_auth_token=TOKEN) as gw:
            twiml = await post_voice_webhook(gw.http_url, call_sid=call_sid, account_sid=ACCOUNT_SID,
                                             extra_headers=[(SIGNATURE_HEADER, good)])
            assert parse_connect_stream(twiml).url == "wss://gw.example.test/twilio/stream"
            assert not _refusals(caplog)

            async with httpx.AsyncClient(base_url=gw.http_url) as client:
                # the same fields, sent in another order: the signature sorts them
                reordered = urlencode(list(reversed(list(form.items()))))
                response = await client.post("/twilio/voice", content=reordered, headers={
                    "Content-Type": "application/x-www-form-urlencoded", SIGNATURE_HEADER: good})
                assert response.status_code == 200 and "<Connect>" in response.text

                cases = [
                    ("missing", {}, form),
                    ("wrong", {SIGNATURE_HEADER: good[:-2] + "x="}, form),
                    ("another token", {SIGNATURE_HEADER: compute_signature("other", PUBLIC + "/twilio/voice", form)},
                     form),
                    ("signed for the local URL", {SIGNATURE_HEADER: compute_signature(
                        TOKEN, gw.http_url + "/twilio/voice", form)}, form),
                    ("signed for another path", {SIGNATURE_HEADER: compute_signature(
                        TOKEN, PUBLIC + "/twilio/status", form)}, form),
                    ("a field changed", {SIGNATURE_HEADER: good}, {**form, "From": "+15550000000"}),
                    ("a field added", {SIGNATURE_HEADER: good}, {**form, "Extra": ""}),
                ]
                for name, headers, data in cases:
                    response = await client.post("/twilio/voice", data=data, headers=headers)
                    assert response.status_code == 403, name
                    assert "<Response>" not in response.text
                    line = _assert_one_clean_refusal(caplog, good)
                    assert "POST /twilio/voice" in line, line
                    if name == "missing":
                        assert "no X-Twilio-Signature" in line
                    else:
                        assert "does not match https://gw.example.test/twilio/voice" in line
    assert gw.gateway.refused_requests == len(cases)


async def test_webhook_behind_a_tunnel_is_rebuilt_from_forwarded_headers_then_the_stream_too():
    provider, sink = ScriptedProvider(), ListSink()
    call_sid, stream_sid = call_ids(2)
    form = _voice_form(call_sid)
    tunnel = [("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "abc.ngrok.app")]
    audio = tone(2000, seed=2)
    with trio.fail_after(CALL_LIMIT):
        async with running_gateway(provider, [sink], twilio_auth_token=TOKEN) as gw:
            signature = compute_signature(TOKEN, "https://abc.ngrok.app/twilio/voice", form)
            twiml = await post_voice_webhook(gw.http_url, call_sid=call_sid, account_sid=ACCOUNT_SID,
                                             extra_headers=[*tunnel, (SIGNATURE_HEADER, signature)])
            stream = parse_connect_stream(twiml, require_wss=True)
            assert stream.url == "wss://abc.ngrok.app/twilio/stream"
            # Twilio signs the TwiML URL; ngrok forwards the upgrade with the same headers
            await simulate_call(gw.ws_url, audio, fast=True, call_sid=call_sid, stream_sid=stream_sid,
                                custom_parameters=stream.parameters,
                                extra_headers=[*tunnel, (SIGNATURE_HEADER, compute_signature(TOKEN, stream.url))])
            await gw.idle()
    assert bytes(provider.sessions[0].received) == audio
    assert sink.committed(call_sid) == ["audio 0 to 2000"]


async def test_status_callback_form_get_and_json_variants(caplog):
    caplog.set_level(logging.INFO)
    url = PUBLIC + "/twilio/status"
    query = urlencode({"AccountSid": ACCOUNT_SID, "CallSid": call_ids(3)[0], "StreamEvent": "stream-started"})
    body_hash = body_sha256(V5_BODY)
    with trio.fail_after(CALL_LIMIT):
        async with running_gateway(ScriptedProvider(), [ListSink()], public_url=PUBLIC,
                                   twilio_auth_token=TOKEN) as gw:
            async with httpx.AsyncClient(base_url=gw.http_url) as client:
                ok = [
                    await client.post("/twilio/status", data=V3_PARAMS,
                                      headers={SIGNATURE_HEADER: compute_signature(TOKEN, url, V3_PARAMS)}),
                    await client.get(f"/twilio/status?{query}",
                                     headers={SIGNATURE_HEADER: compute_signature(TOKEN, f"{url}?{query}")}),
                    await client.post(f"/twilio/status?bodySHA256={body_hash}", content=V5_BODY, headers={
                        "Content-Type": "application/json",
                        SIGNATURE_HEADER: compute_signature(TOKEN, f"{url}?bodySHA256={body_hash}")}),
                ]
                assert [r.status_code for r in ok] == [204, 204, 204]
                assert gw.gateway.status_callbacks == 3
                assert not _refusals(caplog)
                refused = [
                    await client.post("/twilio/status", data=V3_PARAMS),
                    await client.post("/twilio/status", data={**V3_PARAMS, "StreamEvent": "stream-error"},
                                      headers={SIGNATURE_HEADER: compute_signature(TOKEN, url, V3_PARAMS)}),
                    await client.get(f"/twilio/status?{query}&x=1",
                                     headers={SIGNATURE_HEADER: compute_signature(TOKEN, f"{url}?{query}")}),
                    await client.post(f"/twilio/status?bodySHA256={body_hash}", content=V5_BODY + b" ", headers={
                        "Content-Type": "application/json",
                        SIGNATURE_HEADER: compute_signature(TOKEN, f"{url}?bodySHA256={body_hash}")}),
                    await client.post("/twilio/status", content=V5_BODY, headers={
                        "Content-Type": "application/json", SIGNATURE_HEADER: compute_signature(TOKEN, url)}),
                ]
                assert [r.status_code for r in refused] == [403] * 5
                assert len(_refusals(caplog)) == 5
                assert gw.gateway.status_callbacks == 3


async def test_without_a_token_nothing_is_checked():
    with trio.fail_after(CALL_LIMIT):
        async with running_gateway(ScriptedProvider(), [ListSink()]) as gw:
            assert gw.gateway.validator is None
            twiml = await post_voice_webhook(gw.http_url, call_sid=call_ids(4)[0], account_sid=ACCOUNT_SID)
            await simulate_call(parse_connect_stream(twiml).url, tone(200), fast=True)
            await gw.idle()


# --------------------------------------------------------------------- the WebSocket door


async def _stream(url: str, signed_url: str | None, *extra: tuple[str, str], token: str = TOKEN) -> None:
    headers = [*extra] + ([(SIGNATURE_HEADER, compute_signature(token, signed_url))] if signed_url else [])
    await simulate_call(url, tone(300), fast=True, extra_headers=headers)


@pytest.mark.parametrize(
    ("public_url", "signed", "extra", "accepted"),
    [
        (PUBLIC, "wss://gw.example.test/twilio/stream", (), True),
        (PUBLIC, "wss://gw.example.test/twilio/stream/", (), True),
        (PUBLIC, "wss://gw.example.test:443/twilio/stream", (), True),
        (None, "{ws}", (), True),
        (None, "{ws}/", (), True),
        (PUBLIC, None, (), False),
        (PUBLIC, "https://gw.example.test/twilio/stream", (), False),
        (PUBLIC, "wss://gw.example.test:8443/twilio/stream", (), False),
        (PUBLIC, "wss://other.example.test/twilio/stream", (), False),
        (PUBLIC, "wss://gw.example.test/twilio/voice", (), False),
        (PUBLIC, "{ws}", (), False),
        (None, "wss://abc.ngrok.app/twilio/stream", (("X-Forwarded-Proto", "https"),
                                                     ("X-Forwarded-Host", "abc.ngrok.app")), True),
        (None, "wss://abc.ngrok.app/twilio/stream", (), False),
    ],
    ids=["as in TwiML", "trailing slash", "default port", "local url", "local url slash", "missing",
         "https scheme", "other port", "other host", "other path", "local url while public is set",
         "forwarded", "forwarded headers missing"],
)
async def test_stream_upgrade_requires_the_signature_of_the_twiml_url(caplog, public_url, signed, extra, accepted):
    caplog.set_level(logging.INFO)
    provider = ScriptedProvider()
    with trio.fail_after(CALL_LIMIT):
        async with running_gateway(provider, [ListSink()], public_url=public_url, twilio_auth_token=TOKEN) as gw:
            signed_url = signed.format(ws=gw.ws_url) if signed else None
            if accepted:
                await _stream(gw.ws_url, signed_url, *extra)
                await gw.idle()
                assert len(provider.sessions) == 1 and not _refusals(caplog)
            else:
                with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
                    await _stream(gw.ws_url, signed_url, *extra)
                assert rejected.value.status_code == 403
                assert provider.sessions == [] and gw.gateway.registry.total_calls == 0
                line = _assert_one_clean_refusal(caplog, compute_signature(TOKEN, signed_url) if signed_url else "")
                assert "refused a media stream" in line


async def test_stream_upgrade_signed_with_another_token_is_refused(caplog):
    with trio.fail_after(CALL_LIMIT):
        async with running_gateway(ScriptedProvider(), [ListSink()], twilio_auth_token=TOKEN) as gw:
            with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
                await _stream(gw.ws_url, gw.ws_url, token="not-the-token")
    assert rejected.value.status_code == 403
    assert b"X-Twilio-Signature" in (rejected.value.body or b"")


async def test_gateway_constructor_token_wins_and_is_never_in_its_repr():
    from gateway.app import Gateway
    from gateway.config import Settings

    settings = Settings(provider="scripted", twilio_auth_token="from-settings-0001")
    gateway = Gateway(settings, ScriptedProvider(), [], twilio_auth_token="from-constructor-0002")
    assert gateway.validator is not None
    assert gateway.validator.validate_websocket("wss://x/s", compute_signature("from-constructor-0002", "wss://x/s"))
    for text in (repr(gateway), repr(settings), str(settings), repr(gateway.validator)):
        assert "from-settings-0001" not in text and "from-constructor-0002" not in text


async def test_an_oversized_webhook_body_is_refused_before_it_is_read():
    with trio.fail_after(CALL_LIMIT):
        async with running_gateway(ScriptedProvider(), [ListSink()], twilio_auth_token=TOKEN) as gw:
            async with httpx.AsyncClient(base_url=gw.http_url) as client:
                response = await client.post("/twilio/voice", data={"Junk": "x" * (64 * 1024)},
                                             headers={SIGNATURE_HEADER: "irrelevant"})
    assert response.status_code == 413

"""Summarize a py-spy ``--format raw`` profile (collapsed stacks) as Markdown.

    python bench/profile_summary.py bench/out/<run>/runs/ours-200.profile.txt

Three tables: self time by layer (the package of the innermost frame), self time by
function, and inclusive time of the functions on the per-frame path.  Percentages
are of all samples py-spy took while the process was busy (idle samples excluded).
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

__all__ = ["summarize_raw", "layer_of"]

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")

# first match wins: (substring of the file path, layer name)
LAYERS = [
    ("/wsproto/", "wsproto (WebSocket framing)"),
    ("/h11/", "h11 (HTTP/1.1)"),
    ("/hypercorn/", "hypercorn"),
    ("/trio_websocket/", "trio-websocket"),
    ("/trio/", "trio (scheduler, sockets, channels)"),
    ("/outcome/", "trio (scheduler, sockets, channels)"),
    ("/sniffio/", "trio (scheduler, sockets, channels)"),
    ("bare_forwarder", "baseline app"),
    ("/quart", "quart"),
    ("/werkzeug/", "quart"),
    ("/cattrs/", "cattrs"),
    ("providers/twilio/", "providers/twilio (decode)"),
    ("providers/elevenlabs/", "providers/elevenlabs (codec)"),
    ("providers/websocket.py", "providers/websocket.py (session shell)"),
    ("providers/jsonwire.py", "providers/jsonwire.py"),
    ("providers/", "providers (other)"),
    ("actors/twilio_reader.py", "actors/twilio_reader.py"),
    ("actors/", "actors (other)"),
    ("gateway/stream_endpoint.py", "gateway/stream_endpoint.py"),
    ("gateway/sinks/", "gateway/sinks"),
    ("gateway/", "gateway (other)"),
    ("attrs generated", "attrs-generated __init__/__eq__"),
    ("/logging/", "logging"),
    ("/base64.py", "base64"),
    ("/contextlib.py", "contextlib (trio cancel scopes)"),
    ("/socket.py", "socket"),
    ("/encodings/", "codecs"),
]


#: functions whose self time is a system call, whatever package wraps them
SYSCALL_FUNCTIONS = {
    "_nonblocking_helper": "syscalls: socket send/recv",
    "get_events": "syscalls: epoll_wait",
    "send": "syscalls: socket send/recv",
    "recv": "syscalls: socket send/recv",
}


#: pipeline stages, recognized by a function anywhere in the stack (leaf first, so a
#: sample counts for the innermost stage it is in; partial stacks still land somewhere)
COMPONENTS = [
    (("SttReceiver", "WebSocketSession.receive", "_reader_task", "ElevenLabsCodec.receive"),
     "provider receive (trio-websocket reader, codec, SttReceiver)"),
    (("SttSender", "WebSocketSession.send_audio", "WebSocketSession._flush", "send_message",
      "WebSocketConnection._send", "ElevenLabsCodec.send_audio"),
     "provider send (SttSender, session flush, trio-websocket send)"),
    (("TranscriptEmitter", "JsonlSink", "StdoutSink"), "transcript emitter + sinks"),
    (("ReplayBuffer",), "replay buffer"),
    (("Resampler",), "resampler hop"),
    (("watchdog", "is_speech", "Watchdog"), "stall watchdog"),
    (("TwilioReader", "AsgiTextSource", "TwilioStreamDecoder", "decode_message", "TwilioStreamEndpoint"),
     "Twilio reader (ASGI receive, decode, batching)"),
    (("TCPServer", "WSStream", "H11Protocol", "ProtocolWrapper", "FrameProtocol", "Connection.events",
      "Connection.receive_data", "MessageDecoder", "FrameDecoder", "XorMasker", "WebsocketBuffer"),
     "Hypercorn socket read + wsproto framing"),
    (("Forwarder",), "baseline app"),
]
#: generic machinery: only when no stage above is in the (possibly partial) stack
FALLBACKS = [
    (("get_events", "_epoll_wait"), "trio: epoll"),
    (("_nonblocking_helper", "SocketStream"), "socket send/recv (caller unknown)"),
    (("fail_after", "move_on_after", "CancelScope", "_LockImpl", "Event.wait"),
     "trio cancel scopes, locks (caller unknown)"),
    (("MemorySendChannel", "MemoryReceiveChannel"), "trio memory channels (caller unknown)"),
    (("unrolled_run", "reschedule", "wait_task_rescheduled", "cancel_shielded_checkpoint", "checkpoint"),
     "trio: scheduler (caller unknown)"),
]


def component_of(funcs: list[str]) -> str:
    for table in (COMPONENTS, FALLBACKS):
        for func in reversed(funcs):
            for needles, name in table:
                if any(needle in func for needle in needles):
                    return name
    return "other"


def layer_of(file: str, func: str = "") -> str:
    name = func.rsplit(".", 1)[-1]
    if name in SYSCALL_FUNCTIONS and ("trio/" in file or "wslean" in file):
        return SYSCALL_FUNCTIONS[name]
    path = "/" + file  # py-spy prints site-packages files relative ("trio/_run.py")
    for needle, name in LAYERS:
        if needle in path:
            return name
    return "other (stdlib, importlib, ...)"


def _parse(line: str) -> tuple[list[tuple[str, str]], int] | None:
    stack, _, count = line.rstrip("\n").rpartition(" ")
    if not stack or not count.isdigit():
        return None
    frames = []
    for part in stack.split(";"):
        m = _FRAME.match(part)
        frames.append((m["func"], m["file"]) if m else (part, ""))
    return frames, int(count)


def summarize_raw(path: str | Path, top: int = 25) -> str:
    total = 0
    by_layer: Counter[str] = Counter()
    by_self: Counter[str] = Counter()
    by_incl: Counter[str] = Counter()
    by_component: Counter[str] = Counter()
    for line in Path(path).read_text().splitlines():
        parsed = _parse(line)
        if parsed is None:
            continue
        frames, n = parsed
        total += n
        by_component[component_of([f for f, _ in frames])] += n
        func, file = frames[-1]
        by_layer[layer_of(file, func)] += n
        short = file.split("site-packages/")[-1].split("/work/main/")[-1]
        by_self[f"{func} ({short})"] += n
        seen = set()
        for func, file in frames:
            short = file.split("site-packages/")[-1].split("/work/main/")[-1]
            key = f"{func} ({short})"
            if key not in seen:
                seen.add(key)
                by_incl[key] += n
    if not total:
        return f"no samples in {path}\n"

    def pct(n: int) -> str:
        return f"{100 * n / total:.1f}%"

    lines = [f"Profile {Path(path).name}: {total} busy samples.", "",
             "By pipeline stage (innermost stage found in the stack):", "", "| stage | share |", "|---|---:|"]
    lines += [f"| {k} | {pct(v)} |" for k, v in by_component.most_common()]
    lines += ["", "Self time by layer (innermost frame):", "", "| layer | self |", "|---|---:|"]
    lines += [f"| {k} | {pct(v)} |" for k, v in by_layer.most_common()]
    lines += ["", f"Top {top} functions by self time:", "", "| function | self |", "|---|---:|"]
    lines += [f"| `{k}` | {pct(v)} |" for k, v in by_self.most_common(top)]
    lines += ["", f"Top {top} by inclusive time:", "", "| function | inclusive |", "|---|---:|"]
    lines += [f"| `{k}` | {pct(v)} |" for k, v in by_incl.most_common(top + 10)
              if not k.startswith(("<module>", "run (trio/_core/_run.py)", "main ("))][:top]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(summarize_raw(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 25))

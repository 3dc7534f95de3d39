// earpiece live dashboard: reads GET /calls (stats) and GET /events (Server-Sent Events).
// No build step, no dependencies. The API token (when the gateway asks for one) is kept in
// sessionStorage: this tab only, gone when it closes.
"use strict";

const TOKEN_KEY = "earpiece.apiToken";
const EVENT_TYPES = ["call_started", "transcript", "call_ended", "dtmf",
  "provider_error", "provider_reconnected", "provider_failover"];
const ENDED_VISIBLE_MS = 10 * 60 * 1000; // an ended call stays on the page this long
const STATS_EVERY_MS = 2000;
const RETRY_MS = 3000;

const calls = new Map(); // call_sid -> {el, seq, ended, ...}
let source = null;
let lastEventId = "";
let statsTimer = null;

const $ = (id) => document.getElementById(id);

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

function authHeaders() {
  const t = token();
  return t ? { Authorization: "Bearer " + t } : {};
}

function setConnection(text) { $("connection").textContent = text; }

function showNotice(text) {
  const notice = $("notice");
  notice.textContent = text;
  notice.hidden = !text;
}

function askForToken(message) {
  stopStreaming();
  $("calls-section").hidden = true;
  $("calls").replaceChildren();
  calls.clear();
  $("token-form").hidden = false;
  $("token-error").textContent = message || "";
  setConnection("locked: API token needed");
  $("token-input").focus();
}

async function start() {
  let answer;
  try {
    answer = await fetch("/calls", { headers: authHeaders(), cache: "no-store" });
  } catch (err) {
    setConnection("gateway unreachable; retrying…");
    setTimeout(start, RETRY_MS);
    return;
  }
  if (answer.status === 401) {
    const hadToken = Boolean(token());
    sessionStorage.removeItem(TOKEN_KEY);
    askForToken(hadToken ? "That token was not accepted." : "");
    return;
  }
  if (answer.status === 403) {
    stopStreaming();
    showNotice("This gateway shows live calls to its own machine only. Open the page from there, " +
      "or start the gateway with EARPIECE_API_TOKEN set.");
    setConnection("not allowed from here");
    return;
  }
  if (!answer.ok) {
    setConnection("gateway answered " + answer.status + "; retrying…");
    setTimeout(start, RETRY_MS);
    return;
  }
  $("token-form").hidden = true;
  showNotice("");
  $("calls-section").hidden = false;
  applyStats(await answer.json());
  startStreaming();
}

function startStreaming() {
  stopStreaming();
  const params = new URLSearchParams({ replay: "1" });
  if (token()) params.set("token", token()); // EventSource cannot send headers
  if (lastEventId) params.set("last_event_id", lastEventId);
  source = new EventSource("/events?" + params.toString());
  source.onopen = () => setConnection("live");
  source.onerror = () => {
    if (source && source.readyState === EventSource.CLOSED) {
      // refused (token changed?) or gone: ask /calls again, which says why
      setConnection("disconnected; retrying…");
      stopStreaming();
      setTimeout(start, RETRY_MS);
    } else {
      setConnection("reconnecting…");
    }
  };
  for (const type of EVENT_TYPES) {
    source.addEventListener(type, (message) => {
      if (message.lastEventId) lastEventId = message.lastEventId;
      let event;
      try { event = JSON.parse(message.data); } catch (err) { return; }
      handle(event);
    });
  }
  statsTimer = setInterval(refreshStats, STATS_EVERY_MS);
}

function stopStreaming() {
  if (source) { source.close(); source = null; }
  if (statsTimer) { clearInterval(statsTimer); statsTimer = null; }
}

async function refreshStats() {
  try {
    const answer = await fetch("/calls", { headers: authHeaders(), cache: "no-store" });
    if (answer.status === 401 || answer.status === 403) { start(); return; }
    if (answer.ok) applyStats(await answer.json());
  } catch (err) { /* the event stream reports the outage */ }
  pruneEnded();
}

function applyStats(list) {
  for (const info of list) {
    const call = callFor(info.call_sid);
    if (call.ended) continue;
    setPeople(call, info.from, info.to);
    setSeconds(call, info.audio_ms, info.dropped_ms);
    if (info.provider && !call.providerName) setProvider(call, info.provider, info.provider_state);
  }
  updateCount();
}

// --- one call's card -----------------------------------------------------------------

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function fact(list, label, className) {
  list.append(el("dt", "", label));
  const value = el("dd", className, "–");
  list.append(value);
  return value;
}

function callFor(sid) {
  let call = calls.get(sid);
  if (call) return call;
  const card = el("article", "call live");
  card.dataset.callSid = sid;
  card.id = "call-" + sid;
  const headingId = "heading-" + sid;
  card.setAttribute("aria-labelledby", headingId);
  const head = el("header", "call-head");
  const heading = el("h3", "who", sid);
  heading.id = headingId;
  const status = el("span", "status", "live");
  head.append(heading, status);
  const facts = el("dl", "facts");
  const sidValue = fact(facts, "Call", "sid");
  sidValue.textContent = sid;
  const provider = fact(facts, "Provider", "provider");
  const audio = fact(facts, "Audio", "audio");
  const dropped = fact(facts, "Dropped", "dropped");
  const transcript = el("ol", "committed");
  transcript.setAttribute("aria-live", "polite");
  transcript.setAttribute("aria-label", "Transcript of " + sid);
  const partial = el("p", "partial");
  const digits = el("p", "digits");
  digits.hidden = true;
  card.append(head, facts, transcript, partial, digits);
  $("calls").prepend(card);
  call = { el: card, heading, status, providerEl: provider, audio, dropped, transcript, partial, digits,
    seq: 0, ended: false, endedAt: 0, providerName: "" };
  calls.set(sid, call);
  updateCount();
  return call;
}

function setPeople(call, from, to) {
  if (from || to) call.heading.textContent = (from || "unknown") + " → " + (to || "unknown");
}

function seconds(ms) { return (ms / 1000).toFixed(1) + " s"; }

function setSeconds(call, audioMs, droppedMs) {
  if (typeof audioMs === "number") call.audio.textContent = seconds(audioMs);
  if (typeof droppedMs === "number") {
    call.dropped.textContent = seconds(droppedMs);
    call.dropped.classList.toggle("bad", droppedMs > 0);
  }
}

function setProvider(call, name, state) {
  call.providerName = name;
  call.providerEl.textContent = name + " · " + state;
  call.providerEl.dataset.state = state.split(" ")[0];
}

function handle(event) {
  const sid = event.call_sid;
  if (!sid) return;
  let call = callFor(sid);
  if (event.type === "call_started" && call.ended) { // a new stream of the same call
    call.el.remove();
    calls.delete(sid);
    call = callFor(sid);
  }
  if (typeof event.seq === "number") {
    if (event.seq <= call.seq) return; // seen already (a replay after a reconnect)
    call.seq = event.seq;
  }
  switch (event.type) {
    case "call_started": {
      const params = event.custom_parameters || {};
      setPeople(call, params.From, params.To);
      break;
    }
    case "transcript":
      if (!call.providerName || call.providerEl.dataset.state !== "connected") {
        setProvider(call, event.provider, "connected");
      }
      if (event.kind === "committed") {
        if (event.text) call.transcript.append(el("li", "", event.text));
        call.partial.textContent = "";
      } else {
        call.partial.textContent = event.text;
      }
      break;
    case "provider_error":
      setProvider(call, event.provider, event.fatal ? "failed" : "reconnecting");
      break;
    case "provider_reconnected":
      setProvider(call, event.provider, "connected");
      break;
    case "provider_failover":
      setProvider(call, event.provider, "failed over from " + (event.from || "?"));
      break;
    case "dtmf":
      call.digits.hidden = false;
      call.digits.textContent = (call.digits.textContent || "Keys pressed: ") + event.digit;
      break;
    case "call_ended":
      call.ended = true;
      call.endedAt = Date.now();
      call.partial.textContent = "";
      call.el.classList.remove("live");
      call.el.classList.add("ended");
      call.status.textContent = "ended · " + event.reason;
      if (["connecting", "reconnecting", "connected"].includes(call.providerEl.dataset.state)) {
        call.providerEl.textContent = call.providerName || "–"; // no session any more
        call.providerEl.dataset.state = "closed";
      }
      setSeconds(call, event.audio_ms, event.dropped_ms);
      $("calls").append(call.el); // live calls first
      break;
  }
  updateCount();
}

function pruneEnded() {
  const now = Date.now();
  for (const [sid, call] of calls) {
    if (call.ended && now - call.endedAt > ENDED_VISIBLE_MS) {
      call.el.remove();
      calls.delete(sid);
    }
  }
  updateCount();
}

function updateCount() {
  let live = 0;
  for (const call of calls.values()) if (!call.ended) live += 1;
  $("call-count").textContent = "(" + live + " live, " + (calls.size - live) + " ended)";
  $("no-calls").hidden = calls.size > 0;
}

document.addEventListener("DOMContentLoaded", () => {
  $("token-form").addEventListener("submit", (submit) => {
    submit.preventDefault();
    const value = $("token-input").value.trim();
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    $("token-input").value = "";
    start();
  });
  start();
});

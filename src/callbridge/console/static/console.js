// console.js: the callbridge console page. Dial, watch calls live, listen to one and talk into it.
//
// Plain DOM, no framework. The DOM is updated in place, never built from HTML strings, so
// nothing a caller, the carrier or the API sent is ever parsed as markup. The page's state is
// window.callbridgeConsole, which tests read too.

import { CallAudio, CallEvents, tokenFromApi } from "/static/callbridge.js";

const RANK = { dialing: 0, initiated: 1, ringing: 1, answered: 2, streaming: 3, ended: 4 };
const TRACKS = ["inbound", "outbound"];
const LOG_LIMIT = 1000; // lines kept per call: a long call's first events scroll away
const WAVE_STEP_MS = 25; // one waveform column per 25 ms, whatever the display's refresh rate
const WAVE_COLUMN_PX = 3;
const WAVE_HISTORY = 1024; // columns kept: more than any canvas is wide
const FLOOR_DB = -60; // the meters span -60 dB to 0 dB; quieter is "silent"
const FORMAT_HINT = "E.164 with the country code (+15550100001), or sip:user@host.";
const END_REASONS = {
  call_ended: "the call hung up",
  stream_stopped: "the carrier stopped the media stream",
  stream_lost: "the media connection dropped without a stop",
  codec_refused: "the stream's codec cannot be relayed",
};

const state = (window.callbridgeConsole = { events: [], audio: null, calls: new Map(), selected: null, info: null });
const ui = {}; // every element with a data-testid at load, by camelCased testid
const rows = new Map(); // call_control_id -> that row's elements
const fetching = new Set(); // unknown calls being fetched
const wave = { inbound: new Float32Array(WAVE_HISTORY), outbound: new Float32Array(WAVE_HISTORY), last: 0 };
const shown = { inbound: 0, outbound: 0 }; // smoothed meter positions, 0..1
let selection = { id: null, loaded: true, pending: [], lastSeq: -1 };
let audioContext = null;
let listening = false;
let talkHeld = false; // the Talk button or Space is down
let talkStarting = false; // startTalking() is still opening the microphone
let talkNote = "";
let welcomed = false;
let listGeneration = 0;
let rafId = 0;
let colors = {};

// --- helpers ------------------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) if (value != null) node.setAttribute(name, value);
  node.append(...children);
  return node;
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function showMessage(node, message) {
  setText(node, message ?? "");
  node.hidden = !message;
}

const clockFormat = new Intl.DateTimeFormat(undefined, {
  hour: "2-digit", minute: "2-digit", second: "2-digit", fractionalSecondDigits: 3, hourCycle: "h23",
});
const clock = (iso) => (Number.isNaN(Date.parse(iso)) ? String(iso ?? "—") : clockFormat.format(new Date(iso)));
const remoteParty = (call) => (call.direction === "incoming" ? call.from : call.to) ?? "unknown";
const answerable = (call) => call.direction === "incoming" && call.state === "ringing";
const callPath = (id, suffix = "") => `/api/calls/${encodeURIComponent(id)}${suffix}`;

// --- the API key --------------------------------------------------------------------------------
// The console is a page that holds an API key (an operator's tool): taken from the link the
// service prints (#key=…, a fragment, so never sent to any server or log), or typed in; kept in
// sessionStorage (this tab only) and removed from the address bar. Sockets get short-lived
// tokens from POST /api/tokens, as any front end's page would.

const KEY_STORAGE = "callbridge.apiKey";
let apiKey = readKey();
const tokens = tokenFromApi({ apiKey: () => apiKey });

function readKey() {
  const fromLink = new URLSearchParams(location.hash.slice(1)).get("key");
  if (fromLink) {
    sessionStorage.setItem(KEY_STORAGE, fromLink);
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem(KEY_STORAGE);
}

function askForKey(message) {
  ui.keyCard.hidden = false;
  showMessage(ui.keyError, message);
  ui.keyInput.focus();
}

function saveKey(event) {
  event.preventDefault();
  const typed = ui.keyInput.value.trim();
  if (!typed) return askForKey("Paste the API key.");
  apiKey = typed;
  sessionStorage.setItem(KEY_STORAGE, typed);
  ui.keyInput.value = "";
  ui.keyCard.hidden = true;
  showMessage(ui.keyError, null);
  startLive();
}

/** fetch + JSON. A refusal throws an Error carrying the API's {error, detail} as code and message. */
async function api(path, { method = "GET", body } = {}) {
  let response;
  try {
    const headers = body ? { "content-type": "application/json" } : {};
    if (apiKey) headers.authorization = `Bearer ${apiKey}`;
    response = await fetch(path, { method, headers, body: body && JSON.stringify(body) });
  } catch (error) {
    throw Object.assign(new Error(`the service could not be reached (${error.message})`), { code: "network_error" });
  }
  const data = await response.json().catch(() => null);
  if (response.ok) return data;
  if (response.status === 401) askForKey(`The service refused the API key: ${data?.detail ?? "401"}`);
  throw Object.assign(new Error(data?.detail ?? `HTTP ${response.status}`), { code: data?.error ?? `http_${response.status}` });
}

// --- header and dial form -----------------------------------------------------------------------

/** A status dot, a word or two, and why (a close code's explanation) on a line of its own. */
function showConnection(node, { status, code, explanation, delay }, text = status) {
  node.dataset.status = status;
  if (status === "connecting") text = "connecting…";
  if (status === "reconnecting") text = `reconnecting in ${(delay / 1000).toFixed(1)} s`;
  const why = status === "reconnecting" || (status === "closed" && code !== 1000) ? explanation ?? "" : "";
  setText(node.querySelector(".conn-text"), text);
  setText(node.querySelector(".conn-detail"), why);
  node.title = why;
}

async function loadInfo() {
  try {
    const info = (state.info = await api("/api/info"));
    setText(ui.appVersion, `v${info.version}`);
    ui.simulatorBadge.hidden = !info.simulator;
    for (const s of info.simulator ? info.scenarios ?? [] : []) {
      ui.datalist.append(el("option", { value: s.number, label: `${s.name}: ${s.description}` }));
      ui.scenarioSelect.append(el("option", { value: s.number, title: s.description }, `${s.name} (${s.number})`));
      ui.scenarioField.hidden = false;
    }
  } catch (error) {
    setText(ui.appVersion, "version unknown");
    ui.appVersion.title = `GET /api/info failed: ${error.message}`;
  }
}

/** Under the input: what the typed number does in the simulator, else the format rule. */
function describeTarget() {
  const match = state.info?.scenarios?.find((s) => s.number === ui.dialTo.value.trim());
  setText(ui.dialHint, match ? `Scenario “${match.name}”: ${match.description}` : FORMAT_HINT);
  ui.scenarioSelect.value = match?.number ?? "";
}

function setDialError(message, code) {
  ui.dialError.replaceChildren(...(message ? [message] : []), ...(code ? [" ", el("code", {}, code)] : []));
  ui.dialError.hidden = !message;
  ui.dialTo.toggleAttribute("aria-invalid", Boolean(message));
}

async function dial(event) {
  event.preventDefault();
  const to = ui.dialTo.value.trim();
  setDialError(null);
  if (!to) {
    ui.dialTo.focus();
    return setDialError("Enter a number like +15550100001 or a SIP URI like sip:alice@example.com.");
  }
  ui.dial.disabled = true;
  setText(ui.dialLabel, "Dialling…");
  try {
    const { data } = await api("/api/calls", { method: "POST", body: { to } });
    upsertCall(data);
    selectCall(data.call_control_id);
  } catch (error) {
    setDialError(`Could not dial: ${error.message}`, error.code);
  } finally {
    ui.dial.disabled = false;
    setText(ui.dialLabel, "Dial");
  }
}

// --- the calls table ----------------------------------------------------------------------------

/** Merge a call (from the API, or from a call.state event) into state.calls and the page. */
function upsertCall(incoming) {
  const id = incoming.call_control_id;
  const known = state.calls.get(id);
  const call = { ...known };
  for (const [key, value] of Object.entries(incoming)) if (value !== undefined && (value !== null || !known)) call[key] = value;
  // A call only moves up in rank (docs/protocol.md): a snapshot fetched before a newer event
  // arrived must not pull the call back, and its stream is as stale as its state.
  if (known && RANK[known.state] > RANK[incoming.state]) Object.assign(call, { state: known.state, stream: known.stream });
  state.calls.set(id, call);
  const isNew = !rows.has(id);
  renderRow(call);
  if (isNew) orderRows();
  renderCount();
  if (id === selection.id) renderPanel();
}

function buildRow(id) {
  const button = (testid, cls, text) => el("button", { type: "button", class: `btn btn-small ${cls}`, "data-testid": testid }, text);
  const r = {
    select: el("button", { type: "button", class: "row-select", "data-testid": "row-select" }),
    sub: el("span", { class: "row-sub" }),
    pill: el("span", { class: "pill" }),
    answer: button("row-answer", "btn-secondary", "Answer"),
    hangup: button("row-hangup", "btn-danger-quiet", "Hang up"),
  };
  const cell = (name, ...children) => (r[name] = el("td", { class: `cell-${name}`, "data-testid": `call-${name}` }, ...children));
  r.row = el("tr", { class: "call-row", "data-testid": "call-row", "data-call-id": id },
    cell("party", r.select, r.sub), cell("direction"), cell("state", r.pill), cell("stream"), cell("actions", r.answer, r.hangup));
  // A pointer click moves focus to the panel (so Space talks); a keyboard click (detail 0) on
  // the number's button leaves focus in the table, where the user is navigating.
  r.row.addEventListener("click", (event) => {
    if (!event.target.closest(".cell-actions")) selectCall(id, { focus: event.detail > 0 });
  });
  r.answer.addEventListener("click", () => command(id, "answer", r.answer, ui.callsError));
  r.hangup.addEventListener("click", () => command(id, "hangup", r.hangup, ui.callsError));
  return r;
}

function renderRow(call) {
  const id = call.call_control_id;
  if (!rows.has(id)) rows.set(id, buildRow(id));
  const r = rows.get(id);
  r.row.dataset.state = call.state;
  setText(r.select, remoteParty(call));
  setText(r.sub, call.direction === "incoming" ? `to ${call.to ?? "?"}` : `from ${call.from ?? "?"}`);
  setText(r.direction, (r.direction.dataset.direction = call.direction ?? "outgoing"));
  setPill(r.pill, call.state);
  setText(r.stream, (r.stream.dataset.stream = call.stream ?? "none"));
  r.answer.hidden = !answerable(call);
  r.hangup.hidden = call.state === "ended";
  markSelected(r, id === selection.id);
}

function setPill(pill, callState) {
  pill.dataset.state = callState;
  setText(pill, callState);
}

function markSelected(r, selected) {
  r.row.classList.toggle("is-selected", selected);
  if (selected) r.select.setAttribute("aria-current", "true"); // a bare attribute would mean "false"
  else r.select.removeAttribute("aria-current");
}

/** Newest first, by when callbridge first recorded the call (as GET /api/calls orders them). */
function orderRows() {
  const ordered = [...state.calls.values()]
    .sort((a, b) => String(b.created_at ?? "").localeCompare(String(a.created_at ?? "")))
    .map((call) => rows.get(call.call_control_id).row);
  // Moving a row blurs a focused button in it, so move only when the order really changed.
  if (ordered.some((row, index) => ui.tbody.children[index] !== row)) ui.tbody.append(...ordered);
}

function renderCount() {
  const live = [...state.calls.values()].filter((call) => call.state !== "ended").length;
  setText(ui.callsCount, state.calls.size ? `${live} live · ${state.calls.size} shown` : "");
  ui.callsEmpty.hidden = state.calls.size > 0;
}

async function loadCalls() {
  const generation = ++listGeneration; // an older, slower answer must not land after a newer one
  try {
    const { data } = await api("/api/calls?limit=100");
    if (generation !== listGeneration) return;
    for (const call of data) upsertCall(call);
    orderRows();
    showMessage(ui.callsError, null);
  } catch (error) {
    showMessage(ui.callsError, `Could not load the calls: ${error.message}`);
  }
}

async function fetchCall(id) {
  if (fetching.has(id)) return;
  fetching.add(id);
  try {
    upsertCall((await api(callPath(id))).data);
  } catch (error) {
    showMessage(ui.callsError, `Could not load call ${id}: ${error.message}`);
  } finally {
    fetching.delete(id);
  }
}

async function command(id, action, button, errorNode) {
  button.disabled = true;
  showMessage(errorNode, null);
  try {
    upsertCall((await api(callPath(id, `/${action}`), { method: "POST" })).data);
  } catch (error) {
    showMessage(errorNode, `Could not ${action === "hangup" ? "hang up" : action}: ${error.message} (${error.code})`);
  } finally {
    button.disabled = false;
    if (id === selection.id) renderPanel(); // the panel's buttons depend on the state
  }
}

// --- live events --------------------------------------------------------------------------------

function connectEvents() {
  const events = (state.eventsSocket = new CallEvents({ token: tokens }));
  events.addEventListener("status", ({ detail }) => {
    showConnection(ui.statusEvents, detail);
    if (detail.status === "closed" && (detail.code === 0 || detail.code === 4401)) {
      askForKey(`The service refused the API key: ${detail.reason}`);
    }
    if (detail.status === "reconnecting" && !listGeneration) loadCalls(); // useful without the socket too
  });
  // Load the list once the socket is open: whatever is stored after its welcome arrives live,
  // so nothing falls between the GET and the subscription. A resumed socket replays what it missed.
  events.addEventListener("welcome", () => {
    if (!welcomed) loadCalls();
    welcomed = true;
  });
  // The log cannot be replayed (a new database, or too far behind): start again from the API.
  events.addEventListener("resync", async () => {
    state.calls.clear();
    rows.clear();
    ui.tbody.replaceChildren();
    await loadCalls();
    if (selection.id && !state.calls.has(selection.id)) selectCall(null); // the call is gone
    else if (selection.id) loadLog(selection.id);
    renderCount();
  });
  events.addEventListener("event", ({ detail }) => onEvent(detail));
  events.connect();
}

function onEvent(event) {
  state.events.push(event);
  if (event.type === "call.state") applyState(event);
  if (event.call_control_id !== selection.id) return;
  if (selection.loaded) appendLog(event);
  else selection.pending.push(event);
}

function applyState({ call_control_id: id, payload: p = {}, occurred_at }) {
  const update = { call_control_id: id, state: p.state, stream: p.stream, direction: p.direction, from: p.from, to: p.to };
  if (p.state === "ended") update.hangup_cause = p.hangup_cause;
  if (state.calls.has(id)) return upsertCall(update);
  upsertCall({ ...update, created_at: occurred_at }); // show it at once, then fetch the rest
  fetchCall(id);
}

// --- the selected call --------------------------------------------------------------------------

function selectCall(id, { focus = false } = {}) {
  if (focus) ui.callPanel.focus();
  if (selection.id === id) return;
  stopListening();
  if (rows.has(selection.id)) markSelected(rows.get(selection.id), false);
  selection = { id, loaded: false, pending: [], lastSeq: -1 };
  state.selected = id;
  if (rows.has(id)) markSelected(rows.get(id), true);
  showMessage(ui.audioEnd, null);
  showMessage(ui.panelError, null);
  wave.inbound.fill(0);
  wave.outbound.fill(0);
  drawWave();
  renderPanel();
  if (id) loadLog(id);
}

function renderPanel() {
  const call = state.calls.get(selection.id);
  ui.panelEmpty.hidden = Boolean(call);
  ui.panelBody.hidden = !call;
  if (!call) return;
  setText(ui.panelTitle, remoteParty(call));
  const started = call.created_at ? ` · ${clock(call.created_at)}` : "";
  const cause = call.state === "ended" && call.hangup_cause ? ` · ended: ${call.hangup_cause}` : "";
  setText(ui.panelSub, `${call.direction === "incoming" ? "Incoming" : "Outgoing"} call${started}${cause}`);
  setPill(ui.panelState, call.state);
  setText(ui.panelFrom, call.from ?? "—");
  setText(ui.panelTo, call.to ?? "—");
  setText(ui.panelStream, call.stream ?? "none");
  setText(ui.panelCallId, call.call_control_id);
  ui.answer.hidden = !answerable(call);
  ui.hangup.disabled = call.state === "ended";
  renderListen();
}

async function loadLog(id) {
  selection.loaded = false;
  selection.lastSeq = -1;
  ui.eventLog.replaceChildren();
  ui.eventLogBox.setAttribute("aria-busy", "true"); // do not read a whole history out line by line
  try {
    const { data } = await api(callPath(id, "/events"));
    if (selection.id === id) data.forEach(appendLog);
  } catch (error) {
    if (selection.id === id) showMessage(ui.panelError, `Could not load the call's events: ${error.message}`);
  }
  if (selection.id !== id) return;
  // Live events that arrived during the fetch; appendLog skips those the fetch already had.
  selection.pending.splice(0).forEach(appendLog);
  selection.loaded = true;
  ui.eventLogBox.removeAttribute("aria-busy");
}

/** One line per event: seq, time, type and the payload in a few words; newest at the bottom. */
function appendLog(event) {
  if (event.seq <= selection.lastSeq) return;
  selection.lastSeq = event.seq;
  const box = ui.eventLogBox;
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 32; // someone reading older lines keeps their place
  const family = event.type === "call.state" ? "state" : event.type.split(".")[0];
  ui.eventLog.append(el("li", { class: "event-line", "data-testid": "event-line", "data-seq": event.seq, "data-type": event.type },
    el("span", { class: "ev-seq" }, `#${event.seq}`),
    el("time", { class: "ev-time", datetime: event.occurred_at }, clock(event.occurred_at)),
    el("span", { class: "ev-type", "data-family": family }, event.type),
    el("span", { class: "ev-payload" }, summarize(event))));
  while (ui.eventLog.childElementCount > LOG_LIMIT) ui.eventLog.firstElementChild.remove();
  setText(ui.eventCount, String(ui.eventLog.childElementCount));
  if (atBottom) box.scrollTop = box.scrollHeight;
}

function summarize({ type, payload: p }) {
  if (type !== "call.state") {
    return Object.entries(p ?? {})
      .filter(([, value]) => value != null && value !== "")
      .map(([key, value]) => `${key}=${typeof value === "object" ? JSON.stringify(value) : value}`)
      .join(" ");
  }
  const parts = [p.previous_state && p.previous_state !== p.state ? `${p.previous_state} → ${p.state}` : p.state];
  parts.push(`stream ${p.stream}`);
  if (p.reason) parts.push(`by ${p.reason}`);
  if (p.state === "ended") parts.push(`cause ${p.hangup_cause ?? "none"}`);
  return parts.join(" · ");
}

// --- audio: listen ------------------------------------------------------------------------------

function startListening() {
  stopListening(); // an ended CallAudio from before
  // Made in the click handler, so autoplay rules let it play, and shared by every CallAudio, so
  // switching calls does not pile up AudioContexts (CallAudio.close() leaves a given one open).
  audioContext ??= new AudioContext({ latencyHint: "interactive" });
  audioContext.resume().catch(() => {});
  const audio = (state.audio = new CallAudio({ callControlId: selection.id, audioContext, token: tokens }));
  listening = true;
  talkNote = "";
  const mine = (handler) => ({ detail }) => state.audio === audio && handler(detail, audio);
  audio.addEventListener("status", mine(onAudioStatus));
  audio.addEventListener("format", mine(onFormat));
  audio.addEventListener("end", mine(onAudioEnd));
  audio.addEventListener("talk", mine(onTalk));
  audio.addEventListener("error", mine(onAudioError));
  setText(ui.audioFormat, "waiting for the format…");
  showMessage(ui.audioEnd, null);
  showMessage(ui.panelError, null);
  renderListen();
  startLoop();
  audio.listen().catch((error) => {
    if (state.audio !== audio) return;
    stopListening();
    showMessage(ui.panelError, `Could not start the audio: ${error.message}`);
  });
}

function stopListening() {
  releaseTalk();
  const audio = state.audio;
  state.audio = null;
  listening = false;
  if (audio) {
    audio.close();
    if (audioContext?.state === "running") audioContext.suspend().catch(() => {}); // idle: spare the CPU
  }
  showConnection(ui.statusAudio, { status: "idle" }, "not listening");
  setText(ui.audioFormat, "not listening");
  renderListen();
}

function onAudioStatus(detail, audio) {
  showConnection(ui.statusAudio, detail);
  if (detail.status !== "open" && talkHeld) releaseTalk("Talking stopped: the audio connection dropped.");
  if (detail.status === "closed" && !audio.ended) {
    listening = false;
    showMessage(ui.audioEnd, `Audio closed: ${detail.explanation}${detail.reason ? ` (${detail.reason})` : ""}.`);
  }
  renderListen();
}

function onFormat({ codec, talk }) {
  ui.audioFormat.dataset.encoding = codec?.encoding ?? "";
  ui.audioFormat.dataset.sampleRate = codec?.sample_rate ?? "";
  const talkText = talk ? ` · talk-back ${talk.codec}` : " · listen-only";
  setText(ui.audioFormat, codec ? `${codec.encoding} · ${codec.sample_rate / 1000} kHz${talkText}` : "no active stream yet");
  renderListen();
}

function onAudioEnd(end) {
  listening = false;
  releaseTalk();
  const cause = end.hangup_cause ? `, cause ${end.hangup_cause}` : "";
  const dropped = end.dropped ? `, ${end.dropped} dropped` : "";
  ui.audioEnd.dataset.reason = end.reason;
  const why = `${END_REASONS[end.reason] ?? end.reason}${cause} (${end.frames ?? 0} frames${dropped})`;
  showMessage(ui.audioEnd, `Audio ended: ${why}.${end.detail ? ` ${end.detail}` : ""}`);
  renderListen();
}

function renderListen() {
  ui.listen.setAttribute("aria-pressed", String(listening));
  setText(ui.listenLabel, listening ? "Stop listening" : "Listen");
  renderTalk();
}

// --- audio: talk (push-to-talk) -----------------------------------------------------------------

const canTalk = () => listening && state.audio?.status === "open" && Boolean(state.audio.format?.talk);

async function pressTalk() {
  if (talkHeld || !canTalk()) return;
  talkHeld = true;
  talkNote = "Opening the microphone…";
  renderTalk();
  if (talkStarting) return; // an earlier press is still opening the microphone; it sees talkHeld
  talkStarting = true;
  const audio = state.audio;
  try {
    const sent = await audio.startTalking();
    // Released while the microphone was opening: startTalking() cannot be cancelled, so undo it.
    if (!talkHeld || state.audio !== audio) audio.stopTalking();
    else if (sent === false) releaseTalk("Could not talk: the audio connection is not open.");
  } catch (error) {
    const known = { NotAllowedError: "microphone access was denied", NotFoundError: "no microphone was found" };
    releaseTalk(`Could not talk: ${known[error.name] ?? error.message}.`);
  } finally {
    talkStarting = false;
  }
}

function releaseTalk(note = "") {
  if (!talkHeld && !note) return; // a refusal's note stays until the next press
  talkHeld = false;
  talkNote = note;
  state.audio?.stopTalking();
  renderTalk();
}

function onTalk(message) {
  if (message.type === "talk.started" && talkHeld) talkNote = `Talking into the call (sent as ${message.codec}). Release to stop.`;
  if (message.type === "talk.refused") {
    talkHeld = false;
    talkNote = `Talk refused: ${message.reason ?? "no reason given"}.`;
  }
  renderTalk();
}

/** The server answers a talk.start it cannot honour with an `error` (4409: not bidirectional),
 * which CallAudio does not count as a refusal: it would go on streaming the microphone. */
function onAudioError(message, audio) {
  if (audio.talking || talkHeld) {
    audio.talking = false; // not stopTalking(): the server never started, and would reject a talk.stop
    talkHeld = false;
    talkNote = `Talk refused: ${message.reason ?? `error ${message.code}`}.`;
    return renderTalk();
  }
  // Frames captured before the refusal arrived draw errors too; the refusal already says why.
  if (!talkNote.startsWith("Talk refused")) showMessage(ui.panelError, `Audio: ${message.reason} (${message.code})`);
}

function renderTalk() {
  ui.talk.disabled = !canTalk() && !talkHeld;
  ui.talk.setAttribute("aria-pressed", String(talkHeld));
  ui.talk.dataset.talking = String(talkHeld && Boolean(state.audio?.talking));
  setText(ui.talkLabel, talkHeld ? "Talking…" : "Hold to talk");
  const format = state.audio?.format;
  let note = talkNote || "Hold Talk, or hold Space while this panel has focus.";
  if (!talkNote && !listening) note = "Listen first, then hold Talk (or Space) to speak into the call.";
  else if (!talkNote && !format) note = "Waiting for the audio format…";
  else if (!talkNote && !format.codec) note = "No media stream yet: talking works once the call streams.";
  else if (!talkNote && !format.talk) note = "This call's stream is listen-only: talking needs a bidirectional stream.";
  setText(ui.talkStatus, note);
  ui.talkStatus.dataset.refused = String(note.startsWith("Talk refused"));
}

function wireTalk() {
  ui.talk.addEventListener("pointerdown", (event) => event.button === 0 && pressTalk());
  for (const type of ["pointerup", "pointerleave", "pointercancel"]) ui.talk.addEventListener(type, () => releaseTalk());
  ui.talk.addEventListener("contextmenu", (event) => event.preventDefault()); // a long press on a touch screen
  // Space is push-to-talk anywhere in the panel (Enter still activates the other buttons). Its
  // keyup default is prevented too, or releasing Space would click the focused button.
  const onSpace = (event) => {
    if (event.code !== "Space" || event.target.matches("input, select, textarea")) return;
    event.preventDefault();
    if (event.type === "keyup") releaseTalk();
    else if (!event.repeat) pressTalk();
  };
  ui.callPanel.addEventListener("keydown", onSpace);
  ui.callPanel.addEventListener("keyup", onSpace);
  ui.callPanel.addEventListener("focusout", (event) => ui.callPanel.contains(event.relatedTarget) || releaseTalk());
  window.addEventListener("blur", () => releaseTalk()); // a key released in another window sends no keyup here
}

// --- meters and waveform ------------------------------------------------------------------------

const toFraction = (rms) => (rms > 0 ? Math.min(1, Math.max(0, 1 - (20 * Math.log10(rms)) / FLOOR_DB)) : 0);

function startLoop() {
  if (rafId) return;
  wave.last = performance.now();
  rafId = requestAnimationFrame(tick);
}

function tick(now) {
  const levels = listening && state.audio ? state.audio.levels : { inbound: 0, outbound: 0 };
  let moving = false;
  for (const track of TRACKS) {
    const target = toFraction(levels[track]);
    // Fast attack, slow release: peaks stay readable and the bar does not flicker.
    shown[track] += (target - shown[track]) * (target > shown[track] ? 0.5 : 0.12);
    if (shown[track] < 0.003) shown[track] = 0;
    moving ||= shown[track] > 0;
    paintMeter(track, levels[track]);
  }
  const steps = Math.min(WAVE_HISTORY, Math.floor((now - wave.last) / WAVE_STEP_MS));
  if (steps > 0) {
    wave.last += steps * WAVE_STEP_MS;
    for (const track of TRACKS) {
      wave[track].copyWithin(0, steps);
      wave[track].fill(toFraction(levels[track]), WAVE_HISTORY - steps);
    }
    drawWave();
  }
  rafId = listening || moving ? requestAnimationFrame(tick) : 0; // idle: no frames at all
}

function paintMeter(track, rms) {
  const { meter, fill, db } = ui.meters[track];
  fill.style.transform = `scaleX(${shown[track]})`;
  meter.dataset.level = rms.toFixed(3); // the raw RMS, for tests and the curious
  const text = shown[track] > 0 ? `${Math.round(FLOOR_DB * (1 - shown[track]))} dB` : "silent";
  if (meter.getAttribute("aria-valuetext") === text) return;
  meter.setAttribute("aria-valuenow", String(Math.round(shown[track] * 100)));
  meter.setAttribute("aria-valuetext", text);
  setText(db, shown[track] > 0 ? text : "—");
}

/** Inbound grows up from the centre line, outbound down; the newest column is on the right. */
function drawWave() {
  const canvas = ui.waveform;
  const ctx = canvas.getContext("2d");
  const ratio = window.devicePixelRatio || 1;
  const mid = Math.round(canvas.height / 2);
  const column = WAVE_COLUMN_PX * ratio;
  const count = Math.min(WAVE_HISTORY, Math.ceil(canvas.width / column));
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.fillStyle = colors.axis;
  ctx.fillRect(0, mid, canvas.width, Math.max(1, Math.round(ratio / 2)));
  for (const track of TRACKS) {
    ctx.fillStyle = colors[track];
    for (let i = 0; i < count; i++) {
      const value = wave[track][WAVE_HISTORY - count + i];
      if (!value) continue;
      const height = Math.max(ratio, value * (mid - 2 * ratio));
      const x = canvas.width - (count - i) * column;
      ctx.fillRect(x, track === "inbound" ? mid - height : mid + ratio, Math.max(1, column - ratio), height);
    }
  }
}

function readColors() {
  const style = getComputedStyle(document.documentElement);
  const read = (name) => style.getPropertyValue(name).trim();
  colors = { inbound: read("--inbound"), outbound: read("--outbound"), axis: read("--border-strong") };
  drawWave();
}

function sizeCanvas() {
  const ratio = window.devicePixelRatio || 1;
  ui.waveform.width = Math.round(ui.waveform.clientWidth * ratio);
  ui.waveform.height = Math.round(ui.waveform.clientHeight * ratio);
  drawWave();
}

// --- start --------------------------------------------------------------------------------------

function findElements() {
  for (const node of document.querySelectorAll("[data-testid]")) {
    ui[node.dataset.testid.replace(/-(\w)/g, (_, letter) => letter.toUpperCase())] = node;
  }
  const meter = (node) => ({ meter: node, fill: node.firstElementChild, db: node.nextElementSibling });
  Object.assign(ui, {
    tbody: ui.callsTable.tBodies[0],
    datalist: document.getElementById("scenario-list"),
    dialLabel: ui.dial.querySelector(".btn-label"),
    listenLabel: ui.listen.querySelector(".btn-label"),
    talkLabel: ui.talk.querySelector(".btn-label"),
    meters: { inbound: meter(ui.meterInbound), outbound: meter(ui.meterOutbound) },
  });
}

function wire() {
  ui.keyForm.addEventListener("submit", saveKey);
  ui.dialForm.addEventListener("submit", dial);
  ui.dialTo.addEventListener("input", describeTarget);
  ui.scenarioSelect.addEventListener("change", () => {
    if (ui.scenarioSelect.value) ui.dialTo.value = ui.scenarioSelect.value;
    describeTarget();
    setDialError(null);
  });
  ui.callsRefresh.addEventListener("click", () => loadCalls());
  ui.listen.addEventListener("click", () => (listening ? stopListening() : startListening()));
  ui.answer.addEventListener("click", () => command(selection.id, "answer", ui.answer, ui.panelError));
  ui.hangup.addEventListener("click", () => command(selection.id, "hangup", ui.hangup, ui.panelError));
  wireTalk();
  new ResizeObserver(sizeCanvas).observe(ui.waveform);
  matchMedia("(prefers-color-scheme: dark)").addEventListener("change", readColors);
}

findElements();
wire();
readColors();
renderCount();
renderTalk();
loadInfo();
startLive();

/** The live part needs a key: without one, ask for it first. */
function startLive() {
  if (!apiKey) return askForKey(null);
  if (!state.eventsSocket) connectEvents();
  else if (state.eventsSocket.status === "closed") state.eventsSocket.open();
}

// callbridge.js: the browser client for callbridge's call events and live call audio.
//
// An ES module with no dependencies and no build step:
//
//   import { CallEvents, CallAudio } from "/static/callbridge.js";
//   const token = async () => (await fetch("/my-backend/callbridge-token")).json();
//   const events = new CallEvents({ token });        // ws(s)://<this host>/call-events
//   events.addEventListener("event", (e) => console.log(e.detail));
//   events.connect();
//   const audio = new CallAudio({ callControlId, token }); // ws(s)://<this host>/frontend-audio
//   await audio.listen();                            // plays both tracks; audio.levels for meters
//   await audio.startTalking(); audio.stopTalking(); // the microphone into the call
//
// `token` is a browser token, or a function that fetches one (POST /api/tokens, done by the
// page's own backend); tokens are refreshed on the open socket before they expire.
// Both reconnect on their own with jittered exponential backoff. CallEvents resumes from the
// last seq it saw (and its epoch), so a reconnect, a proxy timeout or a service restart loses
// and repeats nothing. CallAudio skips to live audio after a reconnect. See docs/client.md.

const DEFAULT_BACKOFF = { initial: 500, max: 15000, factor: 2 };

const CLOSE_REASONS = {
  1000: "closed normally",
  1001: "the server is going away (restart or deploy); reconnecting",
  1003: "the server refused the data (e.g. an unsupported codec)",
  1006: "dropped without a close frame — usually a proxy timeout or a missing Upgrade header",
  1008: "refused by policy (bad token, unknown call)",
  1009: "a message was too big",
  1011: "the server hit an error; reconnecting",
  1012: "the service is restarting; reconnecting",
  1013: "the server is overloaded; try again later",
  1015: "TLS handshake failed",
  4400: "bad request (a query parameter or message is malformed)",
  4401: "not authorised (missing, invalid or expired token)",
  4403: "forbidden (the token does not cover this, or the page's origin is not allowed)",
  4429: "too many connections for this address or token",
  4404: "no such call",
  4409: "conflict (someone else is already talking)",
};

/** A human explanation of a WebSocket close code. */
export function explainClose(code) {
  return CLOSE_REASONS[code] ?? `closed with code ${code}`;
}

/** ws(s)://<host><path> for a path on the page's own origin (or an absolute ws URL). */
export function socketUrl(path, base = globalThis.location?.href) {
  if (/^wss?:\/\//.test(path)) return path;
  const url = new URL(path, base);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.toString();
}

function backoffDelay(attempt, options) {
  const ceiling = Math.min(options.max, options.initial * options.factor ** attempt);
  return Math.random() * ceiling; // "full jitter": reconnecting clients do not stampede
}

// --- tokens -----------------------------------------------------------------------------------

const REFRESH_AT = 0.75; // refresh a token on the open socket when 3/4 of its life has passed
const MIN_REFRESH_LEAD_MS = 5000;

/** The `exp` claim of a JWT, in ms since the epoch (null if it cannot be read). */
function jwtExpiry(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const exp = JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "="))).exp;
    return typeof exp === "number" ? exp * 1000 : null;
  } catch {
    return null;
  }
}

/**
 * A socket's token: fetched before each connection (reused while fresh), sent as the
 * `callbridge.token.<token>` subprotocol (never in the URL), refreshed on the open socket
 * before it expires, and dropped when the server says 4401.
 *
 * `source` is a token string, or a function returning a token or `POST /api/tokens`'s answer
 * ({token, expires_in}) — see tokenFromApi().
 */
class Credentials {
  constructor(source) {
    this.source = source;
    this.current = null; // {token, expiresAt}
    this.timer = null;
  }

  async fetch() {
    const answer = typeof this.source === "function" ? await this.source() : this.source;
    const token = typeof answer === "string" ? answer : answer?.token;
    if (!token) throw Object.assign(new Error("the token source gave no token"), { retry: false });
    const expiresAt =
      typeof answer?.expires_in === "number" ? Date.now() + answer.expires_in * 1000 : jwtExpiry(token);
    return { token, expiresAt };
  }

  fresh() {
    return this.current && (this.current.expiresAt === null || this.current.expiresAt - Date.now() > MIN_REFRESH_LEAD_MS);
  }

  async protocols() {
    if (this.source === null) return ["callbridge"];
    if (!this.fresh()) this.current = await this.fetch();
    return ["callbridge", `callbridge.token.${this.current.token}`];
  }

  /** Schedule the refresh of the token on the open socket. */
  opened(send, stillOpen) {
    clearTimeout(this.timer);
    if (typeof this.source !== "function" || !this.current?.expiresAt) return;
    const life = this.current.expiresAt - Date.now();
    const lead = Math.max(MIN_REFRESH_LEAD_MS, life * (1 - REFRESH_AT));
    this.timer = setTimeout(async () => {
      try {
        const next = await this.fetch();
        if (!stillOpen()) return;
        this.pending = next;
        send(JSON.stringify({ type: "token", token: next.token }));
      } catch (error) {
        console.warn(`token refresh failed (${error.message}); the socket will reconnect at expiry`);
      }
    }, Math.max(0, life - lead));
    this.send = send;
    this.stillOpen = stillOpen;
  }

  answer(message) {
    if (message.type === "token.accepted" && this.pending) {
      this.current = this.pending;
      this.pending = null;
      this.opened(this.send, this.stillOpen);
    }
  }

  closed(code) {
    clearTimeout(this.timer);
    if (code === 4401) this.current = null; // expired or refused: the next connection fetches anew
  }

  mayRetry(code) {
    if (code === 4403) return false; // a token for other calls will not become valid by retrying
    if (code === 4401) return typeof this.source === "function"; // only a source can give a new one
    return true;
  }
}

/**
 * A token source that asks `POST /api/tokens` with an API key — for pages that hold a key (like
 * the console). A front end with its own backend should have that backend ask instead.
 */
export function tokenFromApi({ apiKey, calls = "*", rights = ["events", "listen", "talk"], ttl = 600, url = "/api/tokens" }) {
  return async () => {
    const response = await fetch(url, {
      method: "POST",
      headers: { authorization: `Bearer ${typeof apiKey === "function" ? apiKey() : apiKey}`, "content-type": "application/json" },
      body: JSON.stringify({ calls, rights, ttl }),
    });
    const data = await response.json().catch(() => null);
    if (!response.ok) {
      throw Object.assign(new Error(data?.detail ?? `token request failed: HTTP ${response.status}`), {
        retry: response.status >= 500 || response.status === 429,
        status: response.status,
      });
    }
    return data;
  };
}

/**
 * One WebSocket that reconnects until closed. Subclasses get onOpen / onMessage / onClose and
 * decide with shouldReconnect() whether a close ends it for good.
 */
class ReconnectingSocket extends EventTarget {
  constructor({ backoff = DEFAULT_BACKOFF, binaryType = "arraybuffer", token = null } = {}) {
    super();
    this.credentials = new Credentials(token);
    this.backoff = { ...DEFAULT_BACKOFF, ...backoff };
    this.binaryType = binaryType;
    this.socket = null;
    this.attempt = 0;
    this.closedByUser = false;
    this.timer = null;
    this.status = "idle";
  }

  setStatus(status, detail = {}) {
    this.status = status;
    this.dispatchEvent(new CustomEvent("status", { detail: { status, ...detail } }));
  }

  /** Retry later (full-jitter backoff), or stop for good. */
  retryOrStop(again, detail) {
    if (again) {
      const delay = backoffDelay(this.attempt++, this.backoff);
      console.warn(`${this.name} closed (${detail.code}: ${detail.explanation}); retry in ${Math.round(delay)} ms`);
      this.setStatus("reconnecting", { ...detail, delay });
      this.timer = setTimeout(() => this.open(), delay);
    } else {
      this.setStatus("closed", detail);
    }
  }

  async open() {
    this.closedByUser = false;
    clearTimeout(this.timer);
    this.setStatus("connecting");
    let protocols;
    try {
      protocols = await this.credentials.protocols();
    } catch (error) {
      // No token, no socket: the page's token source failed (network, or the key was refused).
      const detail = { code: 0, reason: String(error.message ?? error), explanation: "could not get a token" };
      this.retryOrStop(!this.closedByUser && error.retry !== false, detail);
      return;
    }
    if (this.closedByUser) return;
    const socket = new WebSocket(this.url(), protocols);
    socket.binaryType = this.binaryType;
    this.socket = socket;
    socket.onopen = () => {
      this.attempt = 0;
      this.setStatus("open");
      this.credentials.opened((message) => this.send(message), () => this.socket === socket);
      this.onOpen(socket);
    };
    socket.onmessage = (message) => {
      if (typeof message.data === "string" && message.data.startsWith('{"type":"token.')) {
        this.credentials.answer(JSON.parse(message.data));
        this.dispatchEvent(new CustomEvent("token", { detail: JSON.parse(message.data) }));
        return;
      }
      this.onMessage(message.data);
    };
    socket.onclose = (close) => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.credentials.closed(close.code);
      const explanation = explainClose(close.code);
      const again = !this.closedByUser && this.shouldReconnect(close) && this.credentials.mayRetry(close.code);
      this.onClose(close);
      this.retryOrStop(again, { code: close.code, reason: close.reason, explanation });
    };
  }

  send(data) {
    if (this.socket?.readyState === WebSocket.OPEN) {
      this.socket.send(data);
      return true;
    }
    return false;
  }

  close() {
    this.closedByUser = true;
    clearTimeout(this.timer);
    this.credentials.closed(1000);
    this.socket?.close(1000, "client closed");
  }

  onOpen() {}
  onMessage() {}
  onClose() {}
  shouldReconnect() {
    return true;
  }
}

/**
 * Call events from /call-events, each exactly once and in seq order, across reconnects.
 *
 * Events: "event" (detail: the event), "welcome", "resync" (the log cannot be replayed from
 * where we were: refetch state), "status" (connecting / open / reconnecting / closed).
 */
export class CallEvents extends ReconnectingSocket {
  constructor({ path = "/call-events", callControlIds = [], since = null, epoch = null, ...options } = {}) {
    super(options);
    this.name = "call events";
    this.path = path;
    this.callControlIds = callControlIds;
    this.lastSeq = since;
    this.epoch = epoch;
  }

  url() {
    const url = new URL(socketUrl(this.path));
    for (const id of this.callControlIds) url.searchParams.append("call_control_id", id);
    if (this.lastSeq !== null) url.searchParams.set("since", String(this.lastSeq));
    if (this.epoch !== null) url.searchParams.set("epoch", this.epoch);
    return url.toString();
  }

  connect() {
    this.open();
    return this;
  }

  onOpen() {
    console.log("✅ Connected to call events WebSocket");
  }

  onMessage(data) {
    const message = JSON.parse(data);
    if (message.type === "welcome") {
      // Resuming, the replay (or a resync) follows; a first connection starts at the head.
      this.epoch = message.epoch;
      if (this.lastSeq === null) this.lastSeq = message.seq;
      this.dispatchEvent(new CustomEvent("welcome", { detail: message }));
    } else if (message.type === "resync") {
      this.lastSeq = message.seq; // start again from now; the app refetches the calls
      this.dispatchEvent(new CustomEvent("resync", { detail: message }));
    } else if (typeof message.seq === "number" && message.type !== "welcome") {
      if (this.lastSeq !== null && message.seq <= this.lastSeq) return; // already delivered
      this.lastSeq = message.seq;
      this.dispatchEvent(new CustomEvent("event", { detail: message }));
    } else {
      this.dispatchEvent(new CustomEvent(message.type, { detail: message }));
    }
  }

  shouldReconnect(close) {
    return close.code !== 4400; // a malformed query will not get better by retrying
  }
}

// --- audio ------------------------------------------------------------------------------------

const HEADER_BYTES = 12;
const TRACKS = ["inbound", "outbound"];

function ulawTable() {
  const table = new Float32Array(256);
  for (let code = 0; code < 256; code++) {
    const u = ~code & 0xff;
    const t = (((u & 0x0f) << 3) + 0x84) << ((u & 0x70) >> 4);
    table[code] = (u & 0x80 ? 0x84 - t : t - 0x84) / 32768;
  }
  return table;
}

function alawTable() {
  const table = new Float32Array(256);
  for (let code = 0; code < 256; code++) {
    const a = code ^ 0x55;
    let t = (a & 0x0f) << 4;
    const seg = (a & 0x70) >> 4;
    if (seg === 0) t += 8;
    else if (seg === 1) t += 0x108;
    else t = (t + 0x108) << (seg - 1);
    table[code] = (a & 0x80 ? t : -t) / 32768;
  }
  return table;
}

const TABLES = { PCMU: ulawTable(), PCMA: alawTable() };

/** Decode one frame's payload to float samples in [-1, 1) at the codec's rate. */
export function decodePayload(codec, bytes) {
  const table = TABLES[codec.encoding];
  if (table) {
    const out = new Float32Array(bytes.length);
    for (let i = 0; i < bytes.length; i++) out[i] = table[bytes[i]];
    return out;
  }
  if (codec.encoding === "L16") {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const out = new Float32Array(bytes.byteLength >> 1);
    for (let i = 0; i < out.length; i++) out[i] = view.getInt16(2 * i, false) / 32768;
    return out;
  }
  throw new Error(`cannot decode ${codec.encoding}`);
}

/** Parse a binary frame: { kind, track, chunk, timestamp, payload }. */
export function parseFrame(buffer) {
  const view = new DataView(buffer);
  return {
    kind: view.getUint8(0),
    track: view.getUint8(1),
    chunk: view.getUint32(4, false),
    timestamp: view.getUint32(8, false),
    payload: new Uint8Array(buffer, HEADER_BYTES),
  };
}

function moduleUrl(file) {
  return new URL(file, import.meta.url).toString();
}

/**
 * Live audio of one call from /frontend-audio, played through an AudioWorklet with a small
 * jitter buffer, and the microphone into the call.
 *
 * Events: "format", "end", "mark", "talk" (talk.started / talk.refused / talk.stopped), "levels"
 * (detail: { inbound, outbound } RMS in [0, 1]), "status".
 */
export class CallAudio extends ReconnectingSocket {
  constructor({ callControlId, path = "/frontend-audio", audioContext = null, prerollMs = 60, ...options }) {
    super(options);
    this.name = "audio stream";
    this.callControlId = callControlId;
    this.path = path;
    this.context = audioContext;
    this.prerollMs = prerollMs;
    this.codec = null;
    this.node = null;
    this.ended = false;
    this.levels = { inbound: 0, outbound: 0 };
    this.stats = { frames: 0, played: 0, underruns: 0, overruns: 0, talkFrames: 0 };
    this.talking = false;
    this.wantTalk = false;
    this.talkRate = 16000;
    this.microphone = null;
    this.microphoneReady = null;
    this.ownsContext = audioContext === null;
  }

  url() {
    const url = new URL(socketUrl(this.path));
    url.searchParams.set("call_control_id", this.callControlId);
    return url.toString();
  }

  /** Open the socket and start playing (creates an AudioContext if none was given). */
  async listen() {
    this.context ??= new AudioContext({ latencyHint: "interactive" });
    await this.context.audioWorklet.addModule(moduleUrl("worklets/player.js"));
    this.node = new AudioWorkletNode(this.context, "callbridge-player", {
      numberOfInputs: 0,
      outputChannelCount: [1],
      processorOptions: { prerollMs: this.prerollMs },
    });
    this.node.port.onmessage = (message) => this.onWorklet(message.data);
    this.node.connect(this.context.destination);
    if (this.context.state === "suspended") await this.context.resume().catch(() => {});
    this.ended = false;
    this.open();
    return this;
  }

  onWorklet(message) {
    if (message.type === "levels") {
      this.levels = { inbound: message.inbound, outbound: message.outbound };
      Object.assign(this.stats, { played: message.played, underruns: message.underruns, overruns: message.overruns });
      this.dispatchEvent(new CustomEvent("levels", { detail: this.levels }));
    } else {
      this.dispatchEvent(new CustomEvent(`worklet:${message.type}`, { detail: message }));
    }
  }

  onOpen() {
    console.log("✅ Connected to audio stream");
    this.node?.port.postMessage({ type: "flush" }); // after a reconnect: live, not a backlog
  }

  onMessage(data) {
    if (typeof data !== "string") {
      const frame = parseFrame(data);
      if (frame.kind !== 1 || !this.codec) return;
      const samples = decodePayload(this.codec, frame.payload);
      this.stats.frames++;
      this.node?.port.postMessage(
        { type: "audio", track: frame.track, chunk: frame.chunk, rate: this.codec.sample_rate, samples },
        [samples.buffer],
      );
      return;
    }
    const message = JSON.parse(data);
    if (message.type === "format") {
      this.codec = message.codec;
      this.format = message;
      this.dispatchEvent(new CustomEvent("format", { detail: message }));
    } else if (message.type === "end") {
      this.ended = true;
      this.stopTalking();
      this.dispatchEvent(new CustomEvent("end", { detail: message }));
    } else if (message.type?.startsWith("talk.")) {
      if (message.type === "talk.refused") this.talking = false;
      this.dispatchEvent(new CustomEvent("talk", { detail: message }));
    } else if (message.type === "error" && this.talking && message.code === 4409) {
      // talk.start refused (e.g. the stream is not bidirectional): stop sending the microphone.
      this.talking = false;
      this.dispatchEvent(new CustomEvent("talk", { detail: { ...message, type: "talk.refused" } }));
    } else {
      this.dispatchEvent(new CustomEvent(message.type ?? "message", { detail: message }));
    }
  }

  onClose() {
    this.talking = false;
  }

  shouldReconnect(close) {
    // The call or its stream ended (1000 after `end`), or the request cannot succeed.
    return !this.ended && ![1000, 1003, 1008, 4400, 4404].includes(close.code);
  }

  /** Send the microphone into the call (push-to-talk: call stopTalking() on release). */
  async startTalking({ sampleRate = 16000 } = {}) {
    if (this.talking) return true;
    this.wantTalk = true;
    this.talkRate = sampleRate;
    // One microphone pipeline, however many presses overlap while permission is pending.
    this.microphoneReady ??= this.openMicrophone(sampleRate).catch((error) => {
      this.microphoneReady = null;
      throw error;
    });
    await this.microphoneReady;
    if (!this.wantTalk) return false; // released before the microphone was ready
    this.microphone.capture.port.postMessage({ type: "rate", targetRate: sampleRate });
    this.talking = this.send(JSON.stringify({ type: "talk.start", encoding: "pcm16", sample_rate: sampleRate }));
    return this.talking;
  }

  async openMicrophone(sampleRate) {
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, channelCount: 1 },
    });
    await this.context.audioWorklet.addModule(moduleUrl("worklets/capture.js"));
    const source = this.context.createMediaStreamSource(stream);
    const capture = new AudioWorkletNode(this.context, "callbridge-capture", {
      numberOfOutputs: 0,
      processorOptions: { targetRate: sampleRate },
    });
    capture.port.onmessage = (message) => {
      if (this.talking && this.send(message.data)) this.stats.talkFrames++;
    };
    source.connect(capture);
    this.microphone = { stream, source, capture };
  }

  stopTalking() {
    this.wantTalk = false;
    if (!this.talking) return;
    this.talking = false;
    this.send(JSON.stringify({ type: "talk.stop" }));
  }

  /** Close the socket, the microphone and (if we made it) the AudioContext. */
  close() {
    this.stopTalking();
    super.close();
    if (this.microphone) {
      for (const track of this.microphone.stream.getTracks()) track.stop();
      this.microphone.source.disconnect();
      this.microphone.capture.disconnect();
      this.microphone = null;
      this.microphoneReady = null;
    }
    this.node?.disconnect();
    this.node = null;
    this.levels = { inbound: 0, outbound: 0 };
    if (this.ownsContext && this.context) {
      this.context.close().catch(() => {});
      this.context = null;
    }
  }

  /** Per-track gain (0 mutes a track). */
  setGain(track, value) {
    this.node?.port.postMessage({ type: "gain", track: TRACKS.indexOf(track), value });
  }

  /** Ask the worklet for the first `count` decoded samples of a track (for checks and tests). */
  tap(track, count) {
    this.node?.port.postMessage({ type: "tap", track: TRACKS.indexOf(track), count });
  }
}

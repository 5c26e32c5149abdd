// Baseline: the contract on Node.js with `ws` — what the previous backend was built on.
"use strict";
const { WebSocketServer } = require("ws");

const TRACKS = { inbound: 0, outbound: 1 };
const FORMAT = JSON.stringify({ type: "format", codec: { encoding: "PCMU", sample_rate: 8000, channels: 1 } });
const END = JSON.stringify({ type: "end", reason: "stream_stopped", dropped: 0 });
const listeners = new Map();

const server = new WebSocketServer({ host: "127.0.0.1", port: Number(process.argv[2]), perMessageDeflate: false });
server.on("connection", (socket, request) => {
  const url = new URL(request.url, "http://relay");
  if (url.pathname.startsWith("/frontend-audio")) {
    const call = url.searchParams.get("call_control_id") || "";
    if (!listeners.has(call)) listeners.set(call, new Set());
    listeners.get(call).add(socket);
    socket.send(FORMAT);
    socket.on("close", () => listeners.get(call)?.delete(socket));
    return;
  }
  let call = "";
  socket.on("message", (data) => {
    const message = JSON.parse(data);
    if (message.event === "media") {
      const media = message.media;
      const payload = Buffer.from(media.payload, "base64");
      const frame = Buffer.allocUnsafe(12 + payload.length);
      frame.writeUInt8(1, 0);
      frame.writeUInt8(TRACKS[media.track] ?? 0, 1);
      frame.writeUInt16BE(0, 2);
      frame.writeUInt32BE(Number(media.chunk) >>> 0, 4);
      frame.writeUInt32BE(Number(media.timestamp) >>> 0, 8);
      payload.copy(frame, 12);
      for (const listener of listeners.get(call) ?? []) listener.send(frame, { binary: true });
    } else if (message.event === "start") {
      call = message.start.call_control_id;
    } else if (message.event === "stop") {
      for (const listener of listeners.get(call) ?? []) {
        listener.send(END);
        listener.close();
      }
    }
  });
});
server.on("listening", () => console.log("ready"));

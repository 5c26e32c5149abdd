// The playback worklet: per-track jitter buffers, resampled to the AudioContext's rate.
//
// Decoded frames arrive from the page at the codec's rate (8 or 16 kHz). Each track is
// resampled by linear interpolation to whatever rate the context runs at (48 kHz-only browsers
// included), so audio plays at the right speed, and queued in a ring buffer. Playback of a track
// starts once `prerollMs` is buffered and pauses (underrun) when it runs dry, so network jitter
// costs a short gap rather than crackle; a buffer that grows past 1 s drops its oldest audio.
// Levels (RMS per track) go back to the page about 20 times a second.

const TRACKS = 2;

class Track {
  constructor(capacity, preroll) {
    this.buffer = new Float32Array(capacity);
    this.read = 0;
    this.write = 0;
    this.size = 0;
    this.preroll = preroll;
    this.playing = false;
    this.position = 0; // fractional read position of the resampler within the source
    this.last = 0; // the previous source sample, for interpolation across frames
    this.gain = 1;
    this.sum = 0;
    this.count = 0;
  }

  push(samples, ratio, stats) {
    // ratio = source rate / output rate; produce output samples between source samples.
    let position = this.position;
    let previous = this.last;
    for (;;) {
      const index = Math.floor(position);
      if (index >= samples.length) break;
      const left = index === 0 ? previous : samples[index - 1];
      const right = samples[index];
      const fraction = position - index;
      this.put(left + (right - left) * fraction, stats);
      position += ratio;
    }
    this.position = position - samples.length;
    this.last = samples[samples.length - 1];
  }

  put(value, stats) {
    if (this.size === this.buffer.length) {
      this.read = (this.read + 1) % this.buffer.length; // full: drop the oldest
      this.size--;
      stats.overruns++;
    }
    this.buffer[this.write] = value;
    this.write = (this.write + 1) % this.buffer.length;
    this.size++;
  }

  take() {
    if (!this.playing) {
      if (this.size < this.preroll) return 0;
      this.playing = true;
    }
    if (this.size === 0) {
      this.playing = false;
      return null; // underrun
    }
    const value = this.buffer[this.read];
    this.read = (this.read + 1) % this.buffer.length;
    this.size--;
    return value * this.gain;
  }

  flush() {
    this.read = this.write = this.size = 0;
    this.playing = false;
    this.position = 0;
    this.last = 0;
  }
}

class PlayerProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const prerollMs = options.processorOptions?.prerollMs ?? 60;
    const preroll = Math.round((sampleRate * prerollMs) / 1000);
    this.tracks = Array.from({ length: TRACKS }, () => new Track(sampleRate, preroll));
    this.stats = { played: 0, underruns: 0, overruns: 0 };
    this.taps = new Map(); // track -> { remaining, samples: [], chunks: [] }
    this.blocks = 0;
    this.port.onmessage = (message) => this.onMessage(message.data);
  }

  onMessage(message) {
    if (message.type === "audio") {
      const track = this.tracks[message.track];
      if (!track) return;
      track.push(message.samples, message.rate / sampleRate, this.stats);
      this.record(message);
    } else if (message.type === "flush") {
      for (const track of this.tracks) track.flush();
    } else if (message.type === "gain") {
      if (this.tracks[message.track]) this.tracks[message.track].gain = message.value;
    } else if (message.type === "tap") {
      this.taps.set(message.track, { remaining: message.count, samples: [], chunks: [], rate: 0 });
    }
  }

  record(message) {
    // A tap returns decoded samples exactly as they reached the worklet, with their chunks.
    const tap = this.taps.get(message.track);
    if (!tap || tap.remaining <= 0) return;
    const take = Math.min(tap.remaining, message.samples.length);
    tap.samples.push(...message.samples.subarray(0, take));
    tap.chunks.push(message.chunk);
    tap.rate = message.rate;
    tap.remaining -= take;
    if (tap.remaining === 0) {
      this.port.postMessage({ type: "tap", track: message.track, rate: tap.rate, chunks: tap.chunks, samples: tap.samples });
      this.taps.delete(message.track);
    }
  }

  process(_inputs, outputs) {
    const output = outputs[0][0];
    for (let i = 0; i < output.length; i++) {
      let mixed = 0;
      for (const track of this.tracks) {
        const value = track.take();
        if (value === null) {
          this.stats.underruns++;
          continue;
        }
        mixed += value;
        track.sum += value * value;
        track.count++;
      }
      output[i] = Math.max(-1, Math.min(1, mixed));
    }
    this.stats.played += output.length;
    if (++this.blocks % 18 === 0) {
      const [inbound, outbound] = this.tracks.map((t) => {
        const rms = t.count ? Math.sqrt(t.sum / t.count) : 0;
        t.sum = 0;
        t.count = 0;
        return rms;
      });
      this.port.postMessage({ type: "levels", inbound, outbound, ...this.stats });
    }
    return true;
  }
}

registerProcessor("callbridge-player", PlayerProcessor);

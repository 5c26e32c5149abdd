// The capture worklet: microphone → 16-bit little-endian PCM at 8 or 16 kHz, in 20 ms pieces.
//
// The context runs at its own rate (often 48 kHz). Each output sample averages the input samples
// it covers (a box filter: enough anti-aliasing for speech at these ratios), then 20 ms at the
// target rate goes to the page as one ArrayBuffer, which the page sends as one binary message.

class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.setRate(options.processorOptions?.targetRate ?? 16000);
    this.port.onmessage = (message) => {
      if (message.data.type === "rate") this.setRate(message.data.targetRate);
    };
  }

  setRate(targetRate) {
    this.step = sampleRate / targetRate; // input samples per output sample
    this.frame = new Int16Array(Math.round(targetRate / 50));
    this.filled = 0;
    this.accumulated = 0;
    this.covered = 0;
  }

  process(inputs) {
    const input = inputs[0]?.[0];
    if (!input) return true;
    for (let i = 0; i < input.length; i++) {
      this.accumulated += input[i];
      this.covered += 1;
      if (this.covered >= this.step) {
        const value = this.accumulated / this.covered;
        this.frame[this.filled++] = Math.max(-32768, Math.min(32767, Math.round(value * 32768)));
        this.accumulated = 0;
        this.covered -= this.step;
        if (this.filled === this.frame.length) {
          const out = this.frame.slice();
          this.port.postMessage(out.buffer, [out.buffer]);
          this.filled = 0;
        }
      }
    }
    return true;
  }
}

registerProcessor("callbridge-capture", CaptureProcessor);

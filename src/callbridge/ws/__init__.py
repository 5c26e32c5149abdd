"""The WebSocket surface: /call-events (and, with the media issue, the audio paths)."""

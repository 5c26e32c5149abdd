"""Calls: the call model, its state machine, and the use-cases (dial, answer, hangup, ingest)."""

"""Minimal relays of the carrier → listener contract, the benchmark's baselines."""

"""Carriers: everything that knows a carrier's wire formats lives below this package."""

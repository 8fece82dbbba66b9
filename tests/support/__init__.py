"""Helpers for tests that need real services on loopback."""

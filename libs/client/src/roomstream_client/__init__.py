"""Async Python client for roomstream."""

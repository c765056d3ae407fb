"""Test support: real service processes, unique namespaces and databases, tokens."""

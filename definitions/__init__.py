"""The built-in op catalogue: definitions and their solutions (package data)."""

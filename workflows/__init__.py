"""Workflow definitions and the plain data types they exchange. Deterministic: no I/O here."""

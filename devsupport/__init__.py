"""Real protocol peers for tests and the bench: an SMTP server and an HTTP webhook receiver.

Not used by the running system; `tests/` and `bench/` import it (neither imports the other).
"""

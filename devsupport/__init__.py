"""Real protocol peers for tests and the bench: an SMTP server, an HTTP webhook receiver, Dovecot.

Not used by the running system; `tests/` and `bench/` import it (neither imports the other).
"""

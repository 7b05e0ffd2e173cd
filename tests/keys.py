"""The payload key ring every test client, worker and API uses; checked in on purpose.

These keys encrypt only test data (and the recorded histories under `tests/histories/`, which
`make histories` records with them so the replay suite can decrypt them); they protect nothing
real. Never set them in a deployment.
"""

from __future__ import annotations

from pydantic import SecretStr

TEST_KEY_ID = "test-1"
TEST_KEY = "xgq0sEAHIB+kPV9DJurS1ldwMWCpBu0wpvt+cvqEHI8="
TEST_PAYLOAD_KEYS = SecretStr(f"{TEST_KEY_ID}:{TEST_KEY}")
"""`CAMPAIGN_ENGINE_PAYLOAD_KEYS` of the test suite, the replay suite and `make histories`."""

# A second key for rotation tests.
OTHER_KEY_ID = "test-2"
OTHER_KEY = "c2FHIIls/FNpEIO/172Vs+LskC9mKk/jnPcIk2aQAtQ="

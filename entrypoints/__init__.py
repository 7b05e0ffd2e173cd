"""The composition root: the processes' entry points and their wiring.

`campaign-engine` (`cli.py`), the all-in-one dev runner (`dev.py`), the HTTP server factory every
process and test uses (`servers.py`), and the Temporal dev server runner (`devserver.py`). Only this
package puts `api/`, `worker/` and the shared base (`campaign_engine/`) together; nothing below it
imports it back.
"""

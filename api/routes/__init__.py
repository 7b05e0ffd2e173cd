"""The API's routes, one module per resource, each with its `router` (`api.create_app` adds them).

`health`: the liveness and readiness probes; `campaigns`: PUT and GET a campaign;
`workflow_instances`: enrol a lead, read its instance, approve its gate.
"""

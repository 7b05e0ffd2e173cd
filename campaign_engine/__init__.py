"""What the API, the worker and the CLI share: settings, the store, the Temporal connection."""

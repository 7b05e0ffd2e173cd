"""The inbound pipeline: sources, parsing, classification, matching."""

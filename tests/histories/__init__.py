"""The histories the replay suite (`tests/test_replay.py`) replays, one `*.json` per workflow
shape, and `record`, which records them (`make histories`)."""

"""The test suite (`make test`): suites against real servers, fixtures in `conftest.py`.

Helpers live in `tests.helpers`, the replay histories and their recorder in `tests.histories`.
"""

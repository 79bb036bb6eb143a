"""Fixtures of the deployment tests (helpers live in staging.py)."""

from tests.deploy.staging import source, wheelhouse  # noqa: F401  (session fixtures)

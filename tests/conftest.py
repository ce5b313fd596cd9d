"""Suite-wide hooks and fixtures: the ``peer`` mark of tests/support/peers.py (skip, or fail
under CI=true) and the PostgreSQL server of tests/support/postgres.py."""

from tests.support.peers import pytest_configure, pytest_runtest_setup
from tests.support.postgres import postgres_database, postgres_server

__all__ = ["postgres_database", "postgres_server", "pytest_configure", "pytest_runtest_setup"]

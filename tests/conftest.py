"""Suite-wide hooks: the ``peer`` mark of tests/support/peers.py (skip, or fail under CI=true)."""

from tests.support.peers import pytest_configure, pytest_runtest_setup

__all__ = ["pytest_configure", "pytest_runtest_setup"]

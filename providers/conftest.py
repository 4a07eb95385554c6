"""Fixtures for every provider's tests (`providers/<name>/tests`)."""

from __future__ import annotations

import pytest

from providers.core import testing

pools = pytest.fixture(testing.transport_pools)
serve = pytest.fixture(testing.running_mocks)

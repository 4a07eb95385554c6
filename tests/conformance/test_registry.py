"""Every built-in provider is registered whole and listed by `llm-fleet providers`."""

from __future__ import annotations

import json

from click.testing import CliRunner

from providers.core.http import HttpClientPool
from providers.registry import BUILTIN, builtin_specs, default_registry
from tests.conformance.support import provider_mock, provider_spec
from workers.cli import main


async def test_default_registry_builds_every_builtin_spec() -> None:
    # register() raises TypeError when a spec promises a capability its adapter lacks.
    async with HttpClientPool() as pool:
        registry = default_registry(pool)
    names = [spec.name for spec in builtin_specs()]
    assert len(names) == len(set(names)), f"a provider name is used twice: {names}"
    assert registry.names() == sorted(names)
    for package in BUILTIN:
        assert provider_spec(package).name in registry


def test_every_builtin_package_has_a_mock_of_its_own() -> None:
    prefixes = [provider_mock(package).prefix for package in BUILTIN]
    assert len(prefixes) == len(set(prefixes)), f"mock prefixes collide: {prefixes}"


def test_cli_lists_every_builtin_provider() -> None:
    result = CliRunner().invoke(main, ["providers", "--json"])
    assert result.exit_code == 0, result.output
    listed = {json.loads(line)["name"] for line in result.output.splitlines() if line.strip()}
    assert listed == {spec.name for spec in builtin_specs()}
    assert {provider_spec(package).name for package in BUILTIN} <= listed

"""Settings for a command-line tool that works on the fleet's PostgreSQL."""

from __future__ import annotations

import click

from workers.config import ConfigError, Settings
from workers.logs import configure_logging


def database_settings(what: str) -> Settings:
    """The environment's settings, refusing an empty DATABASE_URL (`what` needs it).

    Library log lines go to stderr, so stdout carries only results (`ID=$(creds add ...)`).
    """
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    configure_logging("console", "WARNING")
    if not settings.database_url:
        raise click.ClickException(f"DATABASE_URL is empty: {what} PostgreSQL")
    return settings

"""`llm-fleet tenants add|roles|list|remove|definitions`: broker users and their permissions.

Each producer (tenant) is a RabbitMQ user of its own and workers and operators
have theirs, so the broker itself keeps producers apart (permissions come from
`workers/broker_roles.py`). Commands other than `definitions` work through the
management HTTP API with an administrator's login; `definitions` writes the same
users and permissions as a file for `rabbitmqctl import_definitions`.

Passwords come from a file or stdin, never argv (which `ps` shows everyone);
a generated password is printed once, and nothing prints a given one.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from contracts.brokers import broker_urls
from contracts.topology import DEFAULT_OPERATOR_USER, DEFAULT_WORKER_USER
from workers.broker_definitions import RoleUser, definitions
from workers.broker_roles import (
    ROLE_TAGS,
    Permission,
    Role,
    permissions,
    role_of,
    valid_user_name,
)
from workers.management import DEFAULT_MANAGEMENT_URL, ManagementClient, ManagementError

F = TypeVar("F", bound=Callable[..., Any])

_NAME_RULE = "1-64 letters, digits, '_' or '-'"
_GENERATED_BYTES = 24  # 32 URL-safe characters


def _vhost(given: str | None) -> str:
    """--vhost, else the vhost of AMQP_URL's first broker (what workers use), else "/"."""
    if given:
        return given
    url = broker_urls(os.environ.get("AMQP_URL") or "amqp://127.0.0.1/")[0]
    # As aiormq reads it: no path or "/" is the default vhost "/".
    return urllib.parse.unquote(urllib.parse.urlsplit(url).path[1:]) or "/"


def _vhost_option(fn: F) -> F:
    return click.option(
        "--vhost",
        help="The vhost the permissions apply to (default: AMQP_URL's, else /).",
    )(fn)


def _api_options(fn: F) -> F:
    fn = _vhost_option(fn)
    return click.option(
        "--management-url",
        envvar="FLEET_MANAGEMENT_URL",
        default=DEFAULT_MANAGEMENT_URL,
        show_default=True,
        help="RabbitMQ management API with an administrator's login (env FLEET_MANAGEMENT_URL).",
    )(fn)


@contextmanager
def _management(url: str, vhost: str) -> Iterator[ManagementClient]:
    """A checked client (API up, login accepted, vhost there); its errors become CLI errors."""
    try:
        with ManagementClient(url) as api:
            api.check(vhost)
            yield api
    except ManagementError as exc:
        raise click.ClickException(str(exc)) from None


def _check_name(name: str, what: str) -> None:
    if not valid_user_name(name):
        raise click.BadParameter(
            f"{name!r} is not a valid user name ({_NAME_RULE})", param_hint=what
        )


def _read_password(path: str) -> str:
    """A password from a file, or stdin for "-"; one trailing line break is not part of it."""
    if path == "-":
        if sys.stdin.isatty():
            click.echo("Type the password, then press Ctrl-D:", err=True)
        text = sys.stdin.read()
    else:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise click.ClickException(f"cannot read {path}: {exc.strerror}") from None
    password = text.removesuffix("\n").removesuffix("\r")
    if not password:
        raise click.ClickException(f"the password in {'stdin' if path == '-' else path} is empty")
    if "\n" in password:
        raise click.ClickException("a password must be one line")
    return password


def _optional_password(path: str | None) -> str | None:
    return None if path is None else _read_password(path)


def _one_stdin(*paths: str | None) -> None:
    if sum(p == "-" for p in paths) > 1:
        raise click.UsageError("only one password can come from stdin ('-')")


def _new_password() -> str:
    return secrets.token_urlsafe(_GENERATED_BYTES)


@dataclass(frozen=True)
class Applied:
    created: bool
    password_set: bool
    generated: str | None

    def __repr__(self) -> str:
        return f"Applied(created={self.created}, password_set={self.password_set})"


def _current(api: ManagementClient, vhost: str, user: str) -> Permission | None:
    for row in api.permissions(vhost):
        if row.user == user:
            return row.permission
    return None


def _apply_role(
    api: ManagementClient, vhost: str, name: str, role: Role, password: str | None
) -> Applied:
    """Create or update `name` in `role`: tags, password (given, or generated for a new
    user; an existing user keeps its own) and permissions on `vhost`."""
    existing = api.user(name)
    if existing is not None:
        extra = sorted(set(existing.tags) - set(ROLE_TAGS[role]))
        if extra:
            raise click.ClickException(
                f"broker user {name!r} exists with tag(s) {', '.join(extra)}, which a "
                f"{role} does not have: refusing to change it (delete it first, or use "
                "another name)"
            )
        current = _current(api, vhost, name)
        held = role_of(name, current) if current is not None else None
        if held is not None and held is not role:
            raise click.ClickException(
                f"broker user {name!r} is the fleet's {held} on vhost {vhost!r}: "
                f"refusing to make it a {role}"
            )
    generated = None
    if password is None and existing is None:
        password = generated = _new_password()
    tags = ROLE_TAGS[role]
    if password is not None:
        api.put_user(name, tags=tags, password=password)
    elif existing is not None and set(existing.tags) != set(tags):
        api.put_user(name, tags=tags, keep=existing)
    api.set_permissions(vhost, name, permissions(role, name))
    return Applied(created=existing is None, password_set=password is not None, generated=generated)


def _report(api: ManagementClient, name: str, role: Role, vhost: str, applied: Applied) -> None:
    if applied.created:
        click.echo(f"created {role} user {name!r}; permissions set on vhost {vhost!r}")
    else:
        state = "password reset" if applied.password_set else "password unchanged"
        click.echo(f"updated {role} user {name!r}: permissions re-applied on {vhost!r}, {state}")
    if applied.generated is not None:
        click.echo(f"password for {name!r} (shown only now; store it): {applied.generated}")
    note = f" (its jobs' tenant is {name!r})" if role is Role.PRODUCER else ""
    click.echo(f"{role} AMQP URL: {_amqp_url_template(api, name, vhost)}{note}")


def _amqp_url_template(api: ManagementClient, user: str, vhost: str) -> str:
    host = urllib.parse.urlsplit(api.target.address).hostname or "HOST"
    path = "" if vhost == "/" else urllib.parse.quote(vhost, safe="")
    return f"amqp://{user}:<password>@{host}:5672/{path}"


@click.group()
def tenants() -> None:
    """Broker users and least-privilege permissions: producers (tenants), workers, operators.

    A job's tenant is the broker user its producer connects as.
    """


@tenants.command("add")
@click.argument("name")
@click.option(
    "--password-file",
    help="Read the password from this file ('-': stdin). Default: keep an existing "
    "user's password; generate one (printed once) for a new user.",
)
@_api_options
def add_cmd(name: str, password_file: str | None, management_url: str, vhost: str | None) -> None:
    """Create (or re-apply) the producer user NAME: its own reply queues, llm.jobs, llm.control."""
    _check_name(name, "NAME")
    if name in (DEFAULT_WORKER_USER, DEFAULT_OPERATOR_USER):
        raise click.BadParameter(
            f"{name!r} is the fleet's worker or operator user, not a tenant", param_hint="NAME"
        )
    password = _optional_password(password_file)
    where = _vhost(vhost)
    with _management(management_url, where) as api:
        applied = _apply_role(api, where, name, Role.PRODUCER, password)
        _report(api, name, Role.PRODUCER, where, applied)


@tenants.command("roles")
@click.option("--worker-user", default=DEFAULT_WORKER_USER, show_default=True)
@click.option("--operator-user", default=DEFAULT_OPERATOR_USER, show_default=True)
@click.option("--worker-password-file", help="The worker user's password ('-': stdin).")
@click.option("--operator-password-file", help="The operator user's password ('-': stdin).")
@_api_options
def roles_cmd(
    worker_user: str,
    operator_user: str,
    worker_password_file: str | None,
    operator_password_file: str | None,
    management_url: str,
    vhost: str | None,
) -> None:
    """Create (or re-apply) the worker and operator users and their permissions."""
    _check_name(worker_user, "--worker-user")
    _check_name(operator_user, "--operator-user")
    if worker_user == operator_user:
        raise click.UsageError("the worker and operator users must differ")
    _one_stdin(worker_password_file, operator_password_file)
    wanted = (
        (worker_user, Role.WORKER, _optional_password(worker_password_file)),
        (operator_user, Role.OPERATOR, _optional_password(operator_password_file)),
    )
    where = _vhost(vhost)
    with _management(management_url, where) as api:
        for name, role, password in wanted:
            _report(api, name, role, where, _apply_role(api, where, name, role, password))


@tenants.command("list")
@_api_options
def list_cmd(management_url: str, vhost: str | None) -> None:
    """Each user with permissions on the vhost, and the role they match (or custom)."""
    where = _vhost(vhost)
    with _management(management_url, where) as api:
        rows = api.permissions(where)
        tags = {u.name: u.tags for u in api.users()}
    width = max([len("USER"), *(len(r.user) for r in rows)])
    click.echo(f"{'USER':<{width}}  {'ROLE':<8}  TAGS")
    for row in sorted(rows, key=lambda r: r.user):
        user_tags = tags.get(row.user, ())
        role = role_of(row.user, row.permission, user_tags)
        line = f"{row.user:<{width}}  {role or 'custom':<8}  {','.join(user_tags)}"
        click.echo(line.rstrip())


@tenants.command("remove")
@click.argument("name")
@_api_options
def remove_cmd(name: str, management_url: str, vhost: str | None) -> None:
    """Delete the producer user NAME (its reply queues expire on their own)."""
    _check_name(name, "NAME")
    where = _vhost(vhost)
    with _management(management_url, where) as api:
        user = api.user(name)
        if user is None:
            raise click.ClickException(f"there is no broker user {name!r}")
        current = _current(api, where, name)
        role = role_of(name, current, user.tags) if current is not None else None
        if role is not Role.PRODUCER:
            what = f"the fleet's {role}" if role else "not a producer"
            raise click.ClickException(
                f"broker user {name!r} is {what} on vhost {where!r}: refusing to delete it "
                "(remove other users with `rabbitmqctl delete_user`)"
            )
        api.delete_user(name)
    click.echo(f"removed producer {name!r}; its reply queues expire on their own")


def _password_files(pairs: tuple[str, ...]) -> dict[str, str]:
    files: dict[str, str] = {}
    for pair in pairs:
        user, sep, path = pair.partition("=")
        if not sep or not user or not path:
            raise click.BadParameter(f"{pair!r} is not USER=PATH", param_hint="--password-file")
        files[user] = path
    _one_stdin(*files.values())
    return files


@tenants.command("definitions")
@click.option("--tenant", "tenant_names", multiple=True, help="A producer user (repeatable).")
@click.option("--worker-user", default=DEFAULT_WORKER_USER, show_default=True)
@click.option("--operator-user", default=DEFAULT_OPERATOR_USER, show_default=True)
@click.option(
    "--without-roles",
    is_flag=True,
    help="Only the tenants: importing the worker and operator users again would reset "
    "their passwords.",
)
@click.option(
    "--password-file",
    "password_files",
    multiple=True,
    metavar="USER=PATH",
    help="A user's password from a file ('-': stdin; repeatable). Users without one get a "
    "generated password, printed once on stderr.",
)
@_vhost_option
def definitions_cmd(
    tenant_names: tuple[str, ...],
    worker_user: str,
    operator_user: str,
    without_roles: bool,
    password_files: tuple[str, ...],
    vhost: str | None,
) -> None:
    """Print RabbitMQ definitions (JSON) of these users and their permissions.

    For `rabbitmqctl import_definitions FILE` or the `load_definitions` setting; the
    file holds password hashes, not passwords. Importing a user that exists replaces it.
    """
    wanted: list[tuple[str, Role]] = []
    if not without_roles:
        wanted += [(worker_user, Role.WORKER), (operator_user, Role.OPERATOR)]
    wanted += [(name, Role.PRODUCER) for name in tenant_names]
    if not wanted:
        raise click.UsageError("nothing to define: name a --tenant, or drop --without-roles")
    names = [name for name, _ in wanted]
    for name in names:
        _check_name(name, "user")
    if len(set(names)) != len(names):
        raise click.UsageError("each user may be named once")
    files = _password_files(password_files)
    unknown = sorted(set(files) - set(names))
    if unknown:
        raise click.BadParameter(
            f"no user {', '.join(unknown)} is being defined", param_hint="--password-file"
        )
    users = []
    for name, role in wanted:
        if name in files:
            password = _read_password(files[name])
        else:
            password = _new_password()
            click.echo(f"password for {name!r} (shown only now; store it): {password}", err=True)
        users.append(RoleUser(name, role, password))
    document = definitions(users, _vhost(vhost))
    click.echo(json.dumps(document, indent=2))

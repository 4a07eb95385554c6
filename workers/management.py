"""A small client of RabbitMQ's management HTTP API: users and permissions.

The login comes from the URL (`http://admin:secret@rabbit:15672`); it is sent
as basic auth and never appears in a message this module raises, which names
the API by an address without the login. Passwords sent to the API are also
scrubbed from any error text the broker sends back.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self

import httpx

from workers.broker_roles import Permission

DEFAULT_MANAGEMENT_URL: Final = "http://guest:guest@127.0.0.1:15672"

_ENABLE_HINT: Final = (
    "Enable the management plugin on the broker (`rabbitmq-plugins enable "
    "rabbitmq_management`; it listens on port 15672), point --management-url "
    "(FLEET_MANAGEMENT_URL) at it, or write a definitions file instead "
    "(`llm-fleet tenants definitions`) and import it with `rabbitmqctl import_definitions`."
)


class ManagementError(RuntimeError):
    """The management API could not do what was asked; the message says why (no secrets)."""


class ManagementUnreachable(ManagementError):
    """Nothing answers at the address, or what answers is not the management API."""


class ManagementLoginRefused(ManagementError):
    """The API refused the login (wrong user or password, or a user without the rights)."""


@dataclass(frozen=True)
class UserInfo:
    name: str
    tags: tuple[str, ...]
    # RabbitMQ's stored hash, sent back unchanged to update tags without a password.
    password_hash: str
    hashing_algorithm: str

    def __repr__(self) -> str:
        return f"UserInfo({self.name!r}, tags={self.tags})"


@dataclass(frozen=True)
class UserPermission:
    user: str
    permission: Permission


@dataclass(frozen=True)
class ManagementTarget:
    """Where the API is and who logs in; `address` is safe to print."""

    address: str
    username: str
    password: str

    def __repr__(self) -> str:
        return f"ManagementTarget({self.address!r}, user={self.username!r})"

    @classmethod
    def parse(cls, url: str) -> ManagementTarget:
        try:
            parts = urllib.parse.urlsplit(url)
            port = parts.port
        except ValueError:
            raise ManagementError("the management URL is not a valid URL") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ManagementError(
                "the management URL must look like http://USER:PASSWORD@HOST:15672"
            )
        if not parts.username:
            raise ManagementError(
                "the management URL names no login: use http://USER:PASSWORD@HOST:15672 "
                "with a user tagged administrator"
            )
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        netloc = host if port is None else f"{host}:{port}"
        # A path prefix (the plugin's `management.path_prefix`) is kept.
        address = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        return cls(
            address=address,
            username=urllib.parse.unquote(parts.username),
            password=urllib.parse.unquote(parts.password or ""),
        )


def _quote(segment: str) -> str:
    # vhost "/" is "%2F" in the API's paths.
    return urllib.parse.quote(segment, safe="")


class ManagementClient:
    """Synchronous (the CLI is); one connection pool per client. Use as a context manager."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.target = ManagementTarget.parse(url)
        self._secrets = {self.target.password} - {""}
        self._http = httpx.Client(
            base_url=self.target.address + "/api/",
            auth=(self.target.username, self.target.password),
            timeout=timeout,
            transport=transport,
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- requests ------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _request(
        self, method: str, path: str, *, body: Any = None, missing_ok: bool = False
    ) -> Any:
        """One call; its JSON answer (None for no content, or for 404 when `missing_ok`)."""
        where = self.target.address
        try:
            response = self._http.request(method, path, json=body)
        except httpx.TimeoutException:
            raise ManagementUnreachable(
                f"the RabbitMQ management API at {where} did not answer in time. {_ENABLE_HINT}"
            ) from None
        except httpx.TransportError as exc:
            raise ManagementUnreachable(
                f"cannot reach the RabbitMQ management API at {where} "
                f"({type(exc).__name__}). {_ENABLE_HINT}"
            ) from None
        if response.status_code == 401:
            raise ManagementLoginRefused(
                f"the management API at {where} refused the login of user "
                f"{self.target.username!r}{self._reason(response)}: check the login in "
                "--management-url (FLEET_MANAGEMENT_URL); it needs the administrator tag"
            )
        if response.status_code == 404 and missing_ok:
            return None
        if response.status_code == 404 and path == "overview":
            raise ManagementUnreachable(
                f"{where} answers HTTP but is not the RabbitMQ management API. {_ENABLE_HINT}"
            )
        if response.status_code >= 400:
            raise ManagementError(
                f"{method} {path} on the management API at {where} failed: "
                f"HTTP {response.status_code}{self._reason(response)}"
            )
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ManagementUnreachable(
                f"{where} answered {path} with something other than JSON: it is not the "
                f"RabbitMQ management API. {_ENABLE_HINT}"
            ) from None

    def _reason(self, response: httpx.Response) -> str:
        """The broker's own reason from an error body, scrubbed of what we sent."""
        try:
            data = response.json()
        except ValueError:
            return ""
        if not isinstance(data, dict):
            return ""
        reason = data.get("reason") or data.get("error")
        return f" ({self._scrub(str(reason))[:300]})" if reason else ""

    # -- API -----------------------------------------------------------------

    def check(self, vhost: str) -> None:
        """Fail clearly unless the API answers, the login is accepted and `vhost` exists."""
        self._request("GET", "overview")
        if self._request("GET", f"vhosts/{_quote(vhost)}", missing_ok=True) is None:
            raise ManagementError(
                f"the broker has no vhost {vhost!r} (create it with `rabbitmqctl add_vhost`, "
                "or pass --vhost)"
            )

    def user(self, name: str) -> UserInfo | None:
        data = self._request("GET", f"users/{_quote(name)}", missing_ok=True)
        return None if data is None else _user_info(data)

    def users(self) -> list[UserInfo]:
        return [_user_info(u) for u in self._request("GET", "users")]

    def put_user(
        self,
        name: str,
        *,
        tags: tuple[str, ...],
        password: str | None = None,
        keep: UserInfo | None = None,
    ) -> None:
        """Create or update a user with `password`, or with the stored hash of `keep`.

        A PUT without either would leave the user without a password.
        """
        body: dict[str, Any] = {"tags": ",".join(tags)}
        if password is not None:
            self._secrets.add(password)
            body["password"] = password
        elif keep is not None:
            body["password_hash"] = keep.password_hash
            body["hashing_algorithm"] = keep.hashing_algorithm
        else:
            raise ValueError("put_user needs a password or the user's current hash")
        self._request("PUT", f"users/{_quote(name)}", body=body)

    def delete_user(self, name: str) -> bool:
        """False when there was no such user."""
        found = self._request("GET", f"users/{_quote(name)}", missing_ok=True)
        if found is None:
            return False
        self._request("DELETE", f"users/{_quote(name)}", missing_ok=True)
        return True

    def permissions(self, vhost: str) -> list[UserPermission]:
        rows = self._request("GET", f"vhosts/{_quote(vhost)}/permissions")
        return [
            UserPermission(
                user=str(r["user"]),
                permission=Permission(str(r["configure"]), str(r["write"]), str(r["read"])),
            )
            for r in rows
        ]

    def set_permissions(self, vhost: str, user: str, permission: Permission) -> None:
        body = {
            "configure": permission.configure,
            "write": permission.write,
            "read": permission.read,
        }
        self._request("PUT", f"permissions/{_quote(vhost)}/{_quote(user)}", body=body)


def _user_info(data: dict[str, Any]) -> UserInfo:
    tags = data.get("tags") or []
    # 3.9+ lists tags; older versions send one comma-separated string.
    if isinstance(tags, str):
        tags = [t for t in tags.split(",") if t]
    return UserInfo(
        name=str(data["name"]),
        tags=tuple(str(t) for t in tags),
        password_hash=str(data.get("password_hash", "")),
        hashing_algorithm=str(data.get("hashing_algorithm", "")),
    )

"""The roles' permission regexes, the definitions file and the README table (no broker).

RabbitMQ matches permission regexes with Erlang's `re` (PCRE) as a search anywhere in the
resource name; Python's `re.search` behaves the same for the subset used here.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from contracts import topology as t
from workers.broker_definitions import (
    HASHING_ALGORITHM,
    RoleUser,
    definitions,
    password_hash,
    password_matches,
)
from workers.broker_roles import (
    FLEET_EXCHANGES,
    FLEET_PREFIX,
    FLEET_QUEUES,
    ROLE_TAGS,
    Permission,
    Role,
    permissions,
    role_of,
)
from workers.cli import main
from workers.management import (
    ManagementClient,
    ManagementError,
    ManagementLoginRefused,
    ManagementTarget,
    ManagementUnreachable,
)

README = Path(__file__).resolve().parents[2] / "README.md"


def allows(pattern: str, name: str) -> bool:
    return re.search(pattern, name) is not None


def granted(role: Role, user: str, kind: str, name: str) -> bool:
    return allows(getattr(permissions(role, user), kind), name)


# -- producers -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["configure", "read"])
def test_a_producer_reaches_exactly_its_own_reply_queues(kind: str) -> None:
    def a(name: str) -> bool:
        return granted(Role.PRODUCER, "a", kind, name)

    assert a("llm.reply.a.x")
    assert a("llm.reply.a.Tok_en-9")
    assert a("llm.reply.a." + "x" * 128)
    assert not a("llm.reply.a." + "x" * 129)
    assert not a("llm.reply.a.")  # no token
    assert not a("llm.reply.a.b.x")  # user `a.b`'s (a token holds no dot)
    assert not a("llm.reply.a.x.y")
    assert not a("llm.reply.b.x")
    assert not a("llm.reply.ab.x")
    assert not a("llm.reply.a-b.x")
    assert not a("xllm.reply.a.x")  # anchored at the start...
    assert not a("llm.reply.a.x ")  # ...and at the end
    assert not a("llm.replyXa.x")  # dots are literal
    for fleet_name in (*FLEET_EXCHANGES, *FLEET_QUEUES, "amq.default", "amq.gen-abc"):
        assert not a(fleet_name)
    # And user a-b's pattern is not user a's.
    assert granted(Role.PRODUCER, "a-b", kind, "llm.reply.a-b.x")
    assert not granted(Role.PRODUCER, "a-b", kind, "llm.reply.a.x")
    assert not granted(Role.PRODUCER, "ab", kind, "llm.reply.a.x")


def test_reply_queue_permissions_agree_with_owns_reply_queue() -> None:
    names = ["llm.reply.a.x", "llm.reply.a.b.x", "llm.reply.ab.x", "llm.reply.a.", "llm.chat"]
    for user in ("a", "ab", "a-b"):
        for name in names:
            assert granted(Role.PRODUCER, user, "read", name) == t.owns_reply_queue(user, name)


def test_a_producer_publishes_to_jobs_and_control_only() -> None:
    def write(name: str) -> bool:
        return granted(Role.PRODUCER, "a", "write", name)

    assert write(t.JOBS_EXCHANGE)
    assert write(t.CONTROL_EXCHANGE)
    for refused in (
        "amq.default",  # would reach any queue by name, another tenant's replies too
        t.DEAD_LETTER_EXCHANGE,  # forged dead-letter notices
        t.QUEUE_CHAT,
        t.DEAD_QUEUE,
        "llm.reply.a.x",
        "llm.jobsx",
        "xllm.jobs",
        "llm.jobs.x",
        "llm.jobs|llm.dlx",
    ):
        assert not write(refused), refused


# -- workers and operators -------------------------------------------------------------


def test_a_worker_never_reads_dead_letters() -> None:
    def read(name: str) -> bool:
        return granted(Role.WORKER, t.DEFAULT_WORKER_USER, "read", name)

    assert not read(t.DEAD_QUEUE)
    assert read(t.DEAD_NOTIFY_QUEUE)  # llm.dead's pattern does not also cover this one
    for name in (*t.JOB_QUEUES, t.CATALOG_QUEUE, t.RELEASES_QUEUE, *FLEET_EXCHANGES):
        assert read(name), name
    assert read("amq.gen-JzTY20BRgKO-HjmUJj0wLg")
    assert not read("amq.genx")
    assert not read("llm.reply.a.x")
    assert not read("amq.default")


def test_a_worker_writes_what_it_binds_and_the_default_exchange() -> None:
    def write(name: str) -> bool:
        return granted(Role.WORKER, t.DEFAULT_WORKER_USER, "write", name)

    for name in ("amq.default", t.DEAD_LETTER_EXCHANGE, *t.JOB_QUEUES, t.CATALOG_QUEUE):
        assert write(name), name
    assert write(t.DEAD_QUEUE) and write(t.DEAD_NOTIFY_QUEUE) and write("amq.gen-x")
    # Workers publish no jobs and no control messages, and reply via amq.default.
    for name in (t.JOBS_EXCHANGE, t.CONTROL_EXCHANGE, "llm.reply.a.x", "llm.deadx"):
        assert not write(name), name


def test_a_worker_configures_the_fleets_names_only() -> None:
    def configure(name: str) -> bool:
        return granted(Role.WORKER, t.DEFAULT_WORKER_USER, "configure", name)

    for name in (*FLEET_EXCHANGES, *FLEET_QUEUES, "amq.gen-x"):
        assert configure(name), name
    for name in ("llm.reply.a.x", "amq.default", "llm.chat2", "other", "llm.dead.x"):
        assert not configure(name), name


def test_the_operator_has_the_fleets_names_and_nothing_else() -> None:
    for kind in ("configure", "write", "read"):
        assert granted(Role.OPERATOR, "op", kind, t.DEAD_QUEUE)
        assert granted(Role.OPERATOR, "op", kind, "llm.reply.a.x")
        assert granted(Role.OPERATOR, "op", kind, "amq.default")
        assert granted(Role.OPERATOR, "op", kind, "amq.gen-x")
        assert not granted(Role.OPERATOR, "op", kind, "amq.direct")
        assert not granted(Role.OPERATOR, "op", kind, "other.llm.x")


def test_every_pattern_is_anchored_and_names_the_fleets_prefix() -> None:
    for name in (*FLEET_EXCHANGES, *FLEET_QUEUES, t.REPLY_QUEUE_PREFIX):
        assert name.startswith(FLEET_PREFIX)
    for role in Role:
        p = permissions(role, "a")
        for pattern in (p.configure, p.write, p.read):
            assert pattern.startswith("^") and pattern.endswith("$")
            re.compile(pattern)


def test_role_of_recognises_each_role_and_nothing_else() -> None:
    for role in Role:
        assert role_of("a", permissions(role, "a")) is role
        assert role_of("a", permissions(role, "a"), ROLE_TAGS[role]) is role
    # Another tenant's permissions, guest's `.*`, or a role's with other tags: custom.
    assert role_of("b", permissions(Role.PRODUCER, "a")) is None
    assert role_of("guest", Permission(".*", ".*", ".*")) is None
    assert role_of("a", permissions(Role.PRODUCER, "a"), ["administrator"]) is None
    assert role_of("op", permissions(Role.OPERATOR, "op"), []) is None


# -- definitions -----------------------------------------------------------------------


def test_password_hash_is_rabbitmqs_salted_sha256() -> None:
    # The worked example of RabbitMQ's password guide: salt 908DC60A, password "test12".
    salt = bytes.fromhex("908DC60A")
    assert password_hash("test12", salt) == "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR"
    made = password_hash("s3cret-ü")
    raw = base64.b64decode(made)
    assert len(raw) == 4 + 32
    assert raw[4:] == hashlib.sha256(raw[:4] + "s3cret-ü".encode()).digest()
    assert password_matches("s3cret-ü", made)
    assert not password_matches("s3cret-u", made)
    assert password_hash("x") != password_hash("x")  # a fresh salt each time


def test_definitions_document_shape() -> None:
    users = [
        RoleUser("llm-fleet-worker", Role.WORKER, "pw-w"),
        RoleUser("llm-fleet-operator", Role.OPERATOR, "pw-o"),
        RoleUser("acme", Role.PRODUCER, "pw-a"),
    ]
    doc = definitions(users, "prod")
    text = json.dumps(doc)
    assert "pw-w" not in text and "pw-a" not in text
    assert doc["vhosts"] == [{"name": "prod"}]
    by_name = {u["name"]: u for u in doc["users"]}
    assert set(by_name) == {"llm-fleet-worker", "llm-fleet-operator", "acme"}
    assert by_name["acme"]["tags"] == []
    assert by_name["llm-fleet-operator"]["tags"] == ["management"]
    for user in users:
        entry = by_name[user.name]
        assert entry["hashing_algorithm"] == HASHING_ALGORITHM
        assert password_matches(user.password, entry["password_hash"])
    perms = {p["user"]: p for p in doc["permissions"]}
    assert perms["acme"] == {
        "user": "acme",
        "vhost": "prod",
        "configure": permissions(Role.PRODUCER, "acme").configure,
        "write": permissions(Role.PRODUCER, "acme").write,
        "read": permissions(Role.PRODUCER, "acme").read,
    }
    assert perms["llm-fleet-worker"]["read"] == permissions(Role.WORKER, "x").read
    assert repr(users[2]) == "RoleUser('acme', producer)"


def test_definitions_command_reads_files_and_prints_generated_passwords_once(
    tmp_path: Path,
) -> None:
    (tmp_path / "acme.pw").write_text("acme-password\n")
    result = CliRunner().invoke(
        main,
        ["tenants", "definitions", "--tenant", "acme", "--vhost", "/",
         "--password-file", f"acme={tmp_path / 'acme.pw'}"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [u["name"] for u in doc["users"]] == ["llm-fleet-worker", "llm-fleet-operator", "acme"]
    hashes = {u["name"]: u["password_hash"] for u in doc["users"]}
    assert password_matches("acme-password", hashes["acme"])
    assert "acme-password" not in result.output
    generated = dict(
        re.findall(r"password for '([^']+)' \(shown only now; store it\): (\S+)", result.stderr)
    )
    assert set(generated) == {"llm-fleet-worker", "llm-fleet-operator"}
    for name, password in generated.items():
        assert password_matches(password, hashes[name])
        assert password not in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["--without-roles"],
        ["--tenant", "a.b"],
        ["--tenant", "acme", "--tenant", "acme"],
        ["--tenant", "acme", "--password-file", "other=/dev/null"],
        ["--tenant", "acme", "--password-file", "acme"],
    ],
)
def test_definitions_command_refuses_bad_input(args: list[str]) -> None:
    result = CliRunner().invoke(main, ["tenants", "definitions", *args])
    assert result.exit_code != 0
    assert not result.stdout.strip().startswith("{")


# -- the README ------------------------------------------------------------------------


def _readme_table() -> dict[str, Permission]:
    text = README.read_text()
    section = text.split("## Tenants and broker permissions", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, Permission] = {}
    for line in section.splitlines():
        if not line.startswith("| ") or line.startswith("| role"):
            continue
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        role, *patterns = cells
        assert all(p.startswith("`") and p.endswith("`") for p in patterns), line
        rows[role] = Permission(*(p[1:-1].replace("<tenant>", "TENANT") for p in patterns))
    return rows


def test_the_readme_table_is_what_broker_roles_applies() -> None:
    assert _readme_table() == {role.value: permissions(role, "TENANT") for role in Role}


# -- the management client, without a broker ---------------------------------------------


def test_management_target_keeps_the_login_out_of_its_address() -> None:
    target = ManagementTarget.parse("http://adm%40in:p%3Ass@rabbit.internal:15672/prefix/")
    assert target.address == "http://rabbit.internal:15672/prefix"
    assert (target.username, target.password) == ("adm@in", "p:ss")
    assert "p:ss" not in repr(target)
    with pytest.raises(ManagementError, match="names no login"):
        ManagementTarget.parse("http://rabbit:15672")
    with pytest.raises(ManagementError, match="must look like"):
        ManagementTarget.parse("amqp://guest:guest@rabbit:5672/")


def _client(handler: httpx.MockTransport, password: str = "hunter2-secret") -> ManagementClient:
    return ManagementClient(f"http://admin:{password}@rabbit:15672", transport=handler)


def test_an_unreachable_api_says_how_to_enable_it() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with _client(httpx.MockTransport(refuse)) as api, pytest.raises(ManagementUnreachable) as exc:
        api.check("/")
    assert "rabbitmq-plugins enable rabbitmq_management" in str(exc.value)
    assert "tenants definitions" in str(exc.value)
    assert "hunter2-secret" not in str(exc.value)


def test_something_else_on_the_port_is_not_taken_for_the_api() -> None:
    def other(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, text="<html>not here</html>")

    with _client(httpx.MockTransport(other)) as api, pytest.raises(ManagementUnreachable) as exc:
        api.check("/")
    assert "not the RabbitMQ management API" in str(exc.value)


def test_errors_never_carry_passwords() -> None:
    new_password = "the-new-password-123"

    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "PUT":
            # A broker that echoed what it was sent must not get it printed.
            return httpx.Response(
                400, json={"error": "bad_request", "reason": request.content.decode()}
            )
        return httpx.Response(401, json={"error": "not_authorised", "reason": "Login failed"})

    with _client(httpx.MockTransport(answer)) as api:
        with pytest.raises(ManagementLoginRefused) as refused:
            api.users()
        assert "refused the login of user 'admin'" in str(refused.value)
        with pytest.raises(ManagementError) as failed:
            api.put_user("acme", tags=(), password=new_password)
    for message in (str(refused.value), str(failed.value)):
        assert "hunter2-secret" not in message
        assert new_password not in message
    assert "HTTP 400" in str(failed.value)


def test_cli_reports_an_unreachable_api_and_exits_non_zero() -> None:
    # Port 9 (discard) on loopback: nothing listens there.
    result = CliRunner().invoke(
        main, ["tenants", "list", "--management-url", "http://guest:pw-xyz@127.0.0.1:9"]
    )
    assert result.exit_code == 1
    assert "rabbitmq-plugins enable rabbitmq_management" in result.output
    assert "pw-xyz" not in result.output

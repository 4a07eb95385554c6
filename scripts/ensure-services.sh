#!/usr/bin/env bash
# Make sure RabbitMQ and PostgreSQL answer at AMQP_URL / DATABASE_URL.
# Starts the local servers when they are installed but stopped; falls back to
# `docker compose up` when a Docker engine is available; otherwise says what is missing.
set -euo pipefail
AMQP_URL=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/}
DATABASE_URL=${DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/llm_fleet}
PY=${PYTHON:-python3}

hostport() {  # URL default-port -> "host port"
  "$PY" -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(p.hostname or "127.0.0.1", p.port or int(sys.argv[2]))' "$1" "$2"
}
reachable() {
  "$PY" -c 'import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1).close()' "$1" "$2" 2>/dev/null
}
wait_for() {  # name host port seconds
  for _ in $(seq 1 "$4"); do reachable "$2" "$3" && return 0; sleep 1; done
  echo "error: $1 is still not reachable at $2:$3 after $4s" >&2; return 1
}
is_local() { [[ "$1" == "127.0.0.1" || "$1" == "localhost" || "$1" == "::1" ]]; }
docker_ok() { command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; }

# The broker's message-size limit the fleet ships (README: Limits).
FLEET_RABBITMQ_CONF="$(dirname "$0")/../deploy/rabbitmq/rabbitmq.conf"
MAX_MESSAGE_SIZE=$(sed -n 's/^max_message_size *= *\([0-9][0-9]*\) *$/\1/p' "$FLEET_RABBITMQ_CONF")
: "${MAX_MESSAGE_SIZE:?no max_message_size in $FLEET_RABBITMQ_CONF}"

# Lower a running local node's max_message_size to the fleet's at run time, if it is larger
# (RabbitMQ's default is 128 MiB): an outsized job is then refused by the broker instead of
# being read whole by a worker. A smaller value an operator chose is kept. Channels opened
# from now on get the new limit; the node's own configuration decides again after a restart,
# and the next run of this script lowers it again. Only the node that rabbitmqctl reaches and
# that listens on AMQP_URL's port is touched. (Not `-rabbit max_message_size` on the command
# line of a node started below: that would override a smaller value in its rabbitmq.conf.)
cap_message_size() {
  is_local "$AHOST" && command -v rabbitmqctl >/dev/null 2>&1 || return 0
  local result before
  result=$(timeout 30 rabbitmqctl -q eval "
    Want = $MAX_MESSAGE_SIZE,
    Ports = [P || {listener, N, amqp, _, _, P, _} <- rabbit_networking:active_listeners(),
                  N =:= node()],
    case lists:member($APORT, Ports) of
      false -> other_node;
      true ->
        case application:get_env(rabbit, max_message_size) of
          {ok, Now} when is_integer(Now), Now =< Want -> {kept, Now};
          Before -> ok = application:set_env(rabbit, max_message_size, Want), {lowered, Before}
        end
    end." 2>/dev/null | tr -d ' \n') || result=""
  case "$result" in
    "{kept,"*)
      echo "RabbitMQ: max_message_size is ${result//[^0-9]/} bytes, within the fleet's $MAX_MESSAGE_SIZE; left as it is" ;;
    "{lowered,"*)
      # {lowered,{ok,134217728}}, or {lowered,undefined} when RabbitMQ's default applied
      [[ "$result" =~ ([0-9]+) ]] && before="${BASH_REMATCH[1]} bytes" || before="RabbitMQ's default"
      echo "RabbitMQ: max_message_size lowered from $before to $MAX_MESSAGE_SIZE for channels opened from now until the node restarts (to keep it, see deploy/rabbitmq/rabbitmq.conf)" ;;
    other_node) ;;  # AMQP_URL names another local broker than the one rabbitmqctl reaches
    *)
      echo "RabbitMQ: could not check its max_message_size with rabbitmqctl; set max_message_size = $MAX_MESSAGE_SIZE in its rabbitmq.conf (README: Limits)" ;;
  esac
}

read -r AHOST APORT < <(hostport "$AMQP_URL" 5672)
read -r PHOST PPORT < <(hostport "$DATABASE_URL" 5432)

if ! reachable "$AHOST" "$APORT"; then
  if is_local "$AHOST" && command -v rabbitmq-server >/dev/null 2>&1; then
    echo "starting the local RabbitMQ…"
    rabbitmq-server -detached >/dev/null 2>&1 || true
  elif docker_ok; then
    docker compose up -d rabbitmq
  else
    echo "error: RabbitMQ is not reachable at $AHOST:$APORT; install rabbitmq-server, start Docker, or set AMQP_URL" >&2
    exit 1
  fi
  wait_for RabbitMQ "$AHOST" "$APORT" 90
  # The AMQP port opens before the broker finishes booting its plugins.
  command -v rabbitmqctl >/dev/null 2>&1 && is_local "$AHOST" && timeout 60 rabbitmqctl await_startup >/dev/null 2>&1 || true
fi
cap_message_size

if ! reachable "$PHOST" "$PPORT"; then
  if is_local "$PHOST" && command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    echo "starting the local PostgreSQL…"
    for v in $(ls /etc/postgresql); do pg_ctlcluster --skip-systemctl-redirect "$v" main start || true; done
  elif docker_ok; then
    docker compose up -d postgres
  else
    echo "error: PostgreSQL is not reachable at $PHOST:$PPORT; install postgresql, start Docker, or set DATABASE_URL" >&2
    exit 1
  fi
  wait_for PostgreSQL "$PHOST" "$PPORT" 60
fi
echo "services: RabbitMQ $AHOST:$APORT and PostgreSQL $PHOST:$PPORT reachable"

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

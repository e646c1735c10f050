#!/bin/bash
# Container health check: GET /healthz on the node's HTTP port (ITS_HEALTH_PORT, default
# 8080), with bash's /dev/tcp, so the images need no curl. Exit 0 only on an HTTP 200.
set -euo pipefail
port="${ITS_HEALTH_PORT:-8080}"
exec 3<>"/dev/tcp/127.0.0.1/${port}"
printf 'GET /healthz HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n' >&3
IFS= read -r -t 3 status <&3
[[ "${status}" == HTTP/1.[01]\ 200* ]]

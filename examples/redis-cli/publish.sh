#!/usr/bin/env bash
# Publishes straight onto Redis, without HTTP (the relay runs with REDIS_URL):
#   REDIS_URL=redis://localhost:6379 ./publish.sh alice
# Every node listens on <prefix>:publish; one of them runs the message through
# the same validation, history and idempotency as an HTTP publish.
set -euo pipefail
user=${1:-alice}
redis-cli -u "${REDIS_URL:-redis://localhost:6379}" PUBLISH pushrelay:publish \
  "{\"event\":\"notification\",\"data\":{\"text\":\"hello from redis-cli\"},\"users\":[\"$user\"]}"

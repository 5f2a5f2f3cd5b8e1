#!/usr/bin/env bash
# A Docker engine for `make image` and `make test-container` (CI: .ci/run), started and stopped by this script only.
#
#   scripts/dockerd.sh start   prints "running" when an engine already answers (it is left alone, nothing recorded),
#                              else starts dockerd in the background, waits until it answers and prints
#                              "started <pid>" (the pid is recorded in $STATE_DIR/dockerd.pid, its log beside it)
#   scripts/dockerd.sh stop    stops the dockerd that `start` started (by its recorded pid), never any other
#
# dockerd comes from Debian's docker.io package; as root, `start` installs it when it is missing.
set -euo pipefail

STATE_DIR="${HARMGUARD_DOCKERD_STATE:-/run/harmguard-dockerd}"
PID_FILE="$STATE_DIR/dockerd.pid"
LOG_FILE="$STATE_DIR/dockerd.log"
WAIT_S="${HARMGUARD_DOCKERD_WAIT_S:-90}"

answers() { timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

ours() {  # the recorded pid, when it is still that dockerd
  local pid
  [ -f "$PID_FILE" ] || return 1
  pid="$(cat "$PID_FILE")"
  [[ "$pid" =~ ^[0-9]+$ ]] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ] && echo "$pid"
}

start() {
  local pid other
  if answers; then
    echo running
    return 0
  fi
  # A dockerd that is not ours may still be starting (its pid file is there): wait for it, leave it alone.
  other="$(cat /var/run/docker.pid 2>/dev/null || true)"
  if [[ "$other" =~ ^[0-9]+$ ]] && [ "$(cat "/proc/$other/comm" 2>/dev/null)" = dockerd ] && ! ours >/dev/null; then
    for _ in $(seq "$WAIT_S"); do
      if answers; then
        echo running
        return 0
      fi
      sleep 1
    done
    echo "dockerd.sh: dockerd $other (not started by this script) does not answer within ${WAIT_S}s" >&2
    return 1
  fi
  if ! command -v dockerd >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "dockerd.sh: dockerd is not installed; installing Debian's docker.io" >&2
      DEBIAN_FRONTEND=noninteractive apt-get install --yes --no-install-recommends docker.io >&2 \
        || { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install --yes --no-install-recommends docker.io >&2; }
    else
      echo "dockerd.sh: dockerd is not installed and cannot be installed here (needs root and apt-get)" >&2
      return 1
    fi
  fi
  if pid="$(ours)"; then
    echo "dockerd.sh: dockerd $pid (started by this script) does not answer; see $LOG_FILE" >&2
    return 1
  fi
  mkdir -p "$STATE_DIR"
  # setsid: the engine outlives this shell (make runs each line in its own), and a Ctrl-C of make does not reach it.
  setsid dockerd >"$LOG_FILE" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$PID_FILE"
  for _ in $(seq "$WAIT_S"); do
    if answers; then
      echo "started $pid"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then  # (its name is setsid's until it has exec'd dockerd: kill -0, not ours)
      echo "dockerd.sh: dockerd exited while starting; its log ($LOG_FILE) ends:" >&2
      tail -n 20 "$LOG_FILE" >&2
      rm -f "$PID_FILE"
      return 1
    fi
    sleep 1
  done
  echo "dockerd.sh: dockerd did not answer within ${WAIT_S}s; see $LOG_FILE" >&2
  return 1
}

stop() {
  local pid
  if ! pid="$(ours)"; then
    rm -f "$PID_FILE"
    echo "not started here"
    return 0
  fi
  kill -TERM "$pid"
  for _ in $(seq 60); do
    [ -d "/proc/$pid" ] || break
    sleep 1
  done
  if [ -d "/proc/$pid" ]; then
    echo "dockerd.sh: dockerd $pid did not stop within 60s" >&2
    return 1
  fi
  rm -f "$PID_FILE"
  echo "stopped $pid"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac

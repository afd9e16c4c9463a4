#!/bin/bash
# Shell helpers for the lifecycle scripts of silk jobs. Installed as
# /var/vcap/packages/silk-ctl-utils/ctl_util.sh; function names are those of upstream silk-release.

log() {
  printf '%s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)" "$*"
}

# wait_for_server_to_become_healthy <url> <tries> [<curl option>]
# Polls <url> with curl once per second, up to <tries> times. Prints 0 once it answers with a
# success status, 1 if it never does (callers run `exit $(wait_for_server_to_become_healthy ...)`).
wait_for_server_to_become_healthy() {
  local url="$1"
  local tries="$2"
  local curl_opts="${3:-}"
  local i
  for ((i = 0; i < tries; i++)); do
    if [ -n "${curl_opts}" ]; then
      # shellcheck disable=SC2086 # the option is split into words on purpose, e.g. "--data error"
      curl -f -s -o /dev/null --connect-timeout 1 --max-time 5 ${curl_opts} "${url}" && { echo 0; return 0; }
    else
      curl -f -s -o /dev/null --connect-timeout 1 --max-time 5 "${url}" && { echo 0; return 0; }
    fi
    sleep 1
  done
  echo 1
}

pid_guard() {
  local pidfile="$1"
  local name="$2"
  if [ -f "${pidfile}" ]; then
    local pid
    pid="$(head -1 "${pidfile}")"
    if [ -n "${pid}" ] && [ -e "/proc/${pid}" ]; then
      log "${name} is already running with pid ${pid}"
      exit 1
    fi
    rm -f "${pidfile}"
  fi
}

write_pid() {
  local pidfile="$1"
  local pid="$2"
  mkdir -p "$(dirname "${pidfile}")"
  echo "${pid}" > "${pidfile}"
}

# wait_pid <pid> <seconds>: 0 once the process is gone, 1 if it is still there after <seconds>.
wait_pid() {
  local pid="$1"
  local seconds="$2"
  local i
  for ((i = 0; i < seconds * 10; i++)); do
    [ -e "/proc/${pid}" ] || return 0
    sleep 0.1
  done
  [ -e "/proc/${pid}" ] && return 1
  return 0
}

# stop_gracefully <pid>: TERM and wait 8 s, then QUIT and wait 2 s, then KILL and wait 2 s.
stop_gracefully() {
  local pid="$1"
  [ -e "/proc/${pid}" ] || return 0
  kill -TERM "${pid}" 2>/dev/null || true
  wait_pid "${pid}" 8 && return 0
  kill -QUIT "${pid}" 2>/dev/null || true
  wait_pid "${pid}" 2 && return 0
  kill -KILL "${pid}" 2>/dev/null || true
  wait_pid "${pid}" 2
}

# stop_process <pidfile>: stop the process recorded in <pidfile> and remove the file.
stop_process() {
  local pidfile="$1"
  [ -f "${pidfile}" ] || return 0
  local pid
  pid="$(head -1 "${pidfile}")"
  if [ -n "${pid}" ]; then
    stop_gracefully "${pid}" || return 1
  fi
  rm -f "${pidfile}"
}

# stop_process_on_port <port>: stop whichever process listens on the local TCP port.
stop_process_on_port() {
  local port="$1"
  local pid
  pid="$(ss -Htlnp "sport = :${port}" 2>/dev/null | sed -n 's/.*pid=\([0-9]*\).*/\1/p' | head -1)"
  [ -n "${pid}" ] || return 0
  stop_gracefully "${pid}"
}

# handle_orphaned_server <pidfile> <port>: a server left running without a pid file is stopped.
handle_orphaned_server() {
  local pidfile="$1"
  local port="$2"
  [ -f "${pidfile}" ] && return 0
  stop_process_on_port "${port}"
}

# pid_alive <pid>: true while the process exists and is not a zombie (exited, not yet reaped).
pid_alive() {
  [ -e "/proc/$1" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}

# monit_stop_and_wait <process> <pidfile> <seconds>: `monit stop <process>`, then waits until monit
# reports it "not monitored" with nothing pending and the pid in <pidfile> (bpm's) has exited.
# Prints 0 once stopped, 1 if not within <seconds> or if monit refuses. Calls `monit` from PATH.
monit_stop_and_wait() {
  local process="$1"
  local pidfile="$2"
  local seconds="$3"
  local i status pid
  monit stop "${process}" >/dev/null || { echo 1; return 0; }
  for ((i = 0; i < seconds; i++)); do
    status="$(monit summary 2>/dev/null | sed -n "s/^Process '${process}'[[:space:]]*//p" | sed 's/[[:space:]]*$//')"
    if [ "${status}" = "not monitored" ]; then
      pid="$(head -1 "${pidfile}" 2>/dev/null || true)"
      if [ -z "${pid}" ] || ! pid_alive "${pid}"; then
        echo 0
        return 0
      fi
    fi
    sleep 1
  done
  echo 1
}

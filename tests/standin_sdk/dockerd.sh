#!/usr/bin/env bash
# Start/stop/query the test machine's docker daemon the way .ci/run starts it:
#   dockerd --bridge=none --iptables=false --ip6tables=false --ip-masq=false --ip-forward=false
# on the default socket /var/run/docker.sock. Idempotent; a pid file records
# the daemon *we* started so `stop` never kills a daemon somebody else owns.
set -euo pipefail

PIDFILE=${KILN_TEST_DOCKERD_PIDFILE:-/var/run/kiln-test-dockerd.pid}
LOG=${KILN_TEST_DOCKERD_LOG:-/var/log/kiln-test-dockerd.log}
WAIT=${KILN_TEST_DOCKERD_WAIT:-60}
# What a dead daemon leaves behind that blocks the next one (overridable for tests).
STALE_PIDFILE=${KILN_TEST_DOCKER_PIDFILE:-/var/run/docker.pid}
STALE_SOCK=${KILN_TEST_DOCKER_SOCK:-/var/run/docker.sock}

docker_ok() { docker info >/dev/null 2>&1; }

# alive PID: the process exists and is not a zombie
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat:0:1} != Z ]]
}

# any_dockerd: a live process called dockerd (zombies do not hold the socket or docker.pid)
any_dockerd() {
    local pid
    for pid in $(pgrep -x dockerd); do
        alive "${pid}" && return 0
    done
    return 1
}

our_pid() {
    local pid
    [[ -s ${PIDFILE} ]] || return 1
    pid=$(<"${PIDFILE}")
    [[ ${pid} =~ ^[0-9]+$ && -d /proc/${pid} ]] || return 1
    grep -q dockerd "/proc/${pid}/cmdline" 2>/dev/null || return 1
    echo "${pid}"
}

cmd_status() {
    if docker_ok; then
        if pid=$(our_pid); then echo "running (pid ${pid}, started by dockerd.sh)"; else echo "running (not started by dockerd.sh)"; fi
        return 0
    fi
    echo "not running"
    return 3
}

cmd_start() {
    if docker_ok; then
        echo "dockerd already running"
        return 0
    fi
    if ! command -v dockerd >/dev/null; then
        echo "dockerd not installed" >&2
        return 1
    fi
    local offset=0 launched=0
    if ! our_pid >/dev/null; then
        if ! any_dockerd; then
            # A stale socket or pid file from a dead daemon blocks startup (the pid
            # in docker.pid may name a live, unrelated process by now).
            rm -f "${STALE_SOCK}" "${STALE_PIDFILE}"
        fi
        mkdir -p "$(dirname "${LOG}")" "$(dirname "${PIDFILE}")"
        [[ -f ${LOG} ]] && offset=$(stat -c %s "${LOG}")
        rm -f "${PIDFILE}"
        # setsid detaches the daemon from the caller's process group, but it forks
        # (so $! is a launcher that exits at once) when the caller runs with job
        # control; the shell it starts records its own pid (whole, by rename) and
        # execs dockerd, so the pid file always names the daemon.
        # shellcheck disable=SC2016 # $$ and $1 belong to the inner shell
        setsid bash -c 'echo $$ > "$1.new" && mv -f "$1.new" "$1" && exec dockerd --bridge=none --iptables=false \
            --ip6tables=false --ip-masq=false --ip-forward=false' kiln-dockerd "${PIDFILE}" \
            >>"${LOG}" 2>&1 < /dev/null &
        launched=1
    fi
    local i pid="" dead=""
    for ((i = 0; i < WAIT * 2; i++)); do
        if docker_ok; then
            echo "dockerd started (pid $(<"${PIDFILE}"))"
            return 0
        fi
        if ((launched)); then
            # The daemon we launched is dead when its process is gone. Not judged from its
            # command line: /proc/<pid>/cmdline can read empty while the shell execs dockerd.
            if [[ -z ${pid} && -s ${PIDFILE} ]]; then
                pid=$(<"${PIDFILE}")
                [[ ${pid} =~ ^[0-9]+$ ]] || pid=""
            fi
            if [[ -n ${pid} ]] && ! alive "${pid}"; then
                dead="exited"
            elif [[ -z ${pid} ]] && ((i >= 20)); then
                dead="did not record its pid in ${PIDFILE}"
            fi
        elif ! our_pid >/dev/null; then
            dead="exited"
        fi
        if [[ -n ${dead} ]]; then
            echo "dockerd ${dead}; see ${LOG}" >&2
            # Only what this daemon wrote: an older daemon's lines mislead.
            tail -c +"$((offset + 1))" "${LOG}" | tail -n 20 >&2 || true
            return 1
        fi
        sleep 0.5
    done
    echo "dockerd did not become ready within ${WAIT}s; see ${LOG}" >&2
    return 1
}

cmd_stop() {
    local pid i
    if ! pid=$(our_pid); then
        echo "no dockerd started by dockerd.sh"
        rm -f "${PIDFILE}"
        return 0
    fi
    kill -TERM "${pid}"
    for ((i = 0; i < 60; i++)); do
        [[ -d /proc/${pid} ]] || break
        sleep 0.5
    done
    if [[ -d /proc/${pid} ]]; then
        kill -KILL "${pid}" || true
    fi
    rm -f "${PIDFILE}"
    echo "dockerd stopped"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac

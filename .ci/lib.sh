# Helpers of the tiers that drive the real binary step by step (.ci/e2e-vm, .ci/java-flow).
# The sourcing script sets TIER (its name in messages) and W (its work directory), and may
# define after_failure (more to show when a step fails).
# shellcheck shell=bash

STEP=""
PASSED=0

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# until_deadline SECONDS WHAT CMD...: poll CMD every second until it succeeds.
until_deadline() {
  local deadline=$(( $(date +%s) + $1 )) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "$TIER: $what: not within the deadline" >&2
      return 1
    fi
    sleep 1
  done
}

show_failure() {
  echo "$TIER: FAILED at step '$STEP': $1" >&2
  for f in out err; do
    [ -s "$W/$f" ] && { echo "--- its std$f (last 40 lines) ---" >&2; tail -n 40 "$W/$f" >&2; }
  done
  if declare -F after_failure >/dev/null; then after_failure >&2; fi
  exit 1
}

# step NAME WANT_RC CMD...: run CMD (stdin from $STDIN, else nothing) and check its exit code.
step() {
  STEP=$1
  local want=$2 started rc
  shift 2
  started=$(date +%s%N)
  set +e
  "$@" < "${STDIN:-/dev/null}" > "$W/out" 2> "$W/err"
  rc=$?
  set -e
  local ms=$(( ($(date +%s%N) - started) / 1000000 ))
  printf '%s: %-58s exit %3s %4d.%01d s\n' "$TIER" "$STEP" "$rc" $((ms / 1000)) $((ms % 1000 / 100))
  [ "$rc" = "$want" ] || show_failure "exit $rc, expected $want"
  PASSED=$((PASSED + 1))
}

# expect out|err TEXT: the last step's stdout or stderr contains TEXT.
expect() {
  grep -qF -- "$2" "$W/$1" || show_failure "its std$1 does not contain: $2"
}
refuse() {
  ! grep -qF -- "$2" "$W/$1" || show_failure "its std$1 contains: $2"
}

# Helpers of the tiers that drive the real binary step by step (.ci/e2e-vm, .ci/java-flow).
# The sourcing script sets TIER (its name in messages) and W (its work directory), and may
# define after_failure (more to show when a step fails).
# shellcheck shell=bash

STEP=""
PASSED=0

# Milliseconds since the epoch (macOS's date has no %N; bash ≥ 5 has EPOCHREALTIME).
now_ms() {
  if [ -n "${EPOCHREALTIME:-}" ]; then
    local t=${EPOCHREALTIME/[.,]/}
    echo $(( t / 1000 ))
  else
    python3 -c 'import time; print(int(time.time() * 1000))'
  fi
}

# release_binary ROOT: the binary the tier drives, $N10N_BIN or a release build (at most 15 MB,
# as `cargo install` leaves it); prints its path.
release_binary() {
  if [ -n "${N10N_BIN:-}" ]; then echo "$N10N_BIN"; return; fi
  cargo build --release --locked --quiet --manifest-path "$1/Cargo.toml"
  local bin="$1/target/release/n10n-dev" size
  size=$(wc -c < "$bin" | tr -d ' ')
  echo "$TIER: the release binary is $size bytes" >&2
  [ "$size" -le 15000000 ] || { echo "$TIER: the release binary is over 15 MB" >&2; return 1; }
  echo "$bin"
}

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
  started=$(now_ms)
  set +e
  "$@" < "${STDIN:-/dev/null}" > "$W/out" 2> "$W/err"
  rc=$?
  set -e
  local ms=$(( $(now_ms) - started ))
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

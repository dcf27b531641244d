# shellcheck shell=bash disable=SC2034 # sourced: the variables are for the scripts that source it
# Shared by the benchmarks and .ci/provision-check: a loopback sshd of our own, a project
# configured for it, timing.
# Source it; it sets WORK, PORT, KEY, USER_NAME, N10N and cleans up on exit.

set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=$(mktemp -d /tmp/n10n-bench.XXXXXX)
# At exit: what the script added with `on_exit CMD` (last first), then the forwarder that `up`
# starts and the sshd, each by its pid, and $WORK. Without `set -e`: a step that fails (a
# process already gone) must not leave the rest undone.
EXIT_STEPS=()
on_exit() { EXIT_STEPS+=("$1"); }
clean_up() {
  set +e
  local i
  for ((i = ${#EXIT_STEPS[@]} - 1; i >= 0; i--)); do eval "${EXIT_STEPS[i]}"; done
  cat "$WORK"/state/vms/*/forwarder.pid 2>/dev/null | xargs -r kill 2>/dev/null
  kill "$(cat "$WORK/sshd.pid" 2>/dev/null)" 2>/dev/null
  rm -rf "$WORK"
}
trap clean_up EXIT

# N10N_BIN: use this binary instead of building a release one (CI checks reuse the test build).
if [ -n "${N10N_BIN:-}" ]; then
  N10N=$N10N_BIN
else
  cargo build --release --locked --quiet --manifest-path "$ROOT/Cargo.toml"
  N10N="$ROOT/target/release/n10n-dev"
fi
USER_NAME=$(id -un)
KEY="$WORK/id_ed25519"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

ssh-keygen -q -t ed25519 -N '' -f "$WORK/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$KEY"
cp "$KEY.pub" "$WORK/authorized_keys"
cat > "$WORK/sshd_config" <<CONF
Port $PORT
ListenAddress 127.0.0.1
HostKey $WORK/host_key
AuthorizedKeysFile $WORK/authorized_keys
PidFile $WORK/sshd.pid
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
MaxStartups 100
CONF
[ "$(id -u)" = 0 ] && mkdir -p /run/sshd
/usr/sbin/sshd -f "$WORK/sshd_config"
for _ in $(seq 100); do
  ssh-keyscan -p "$PORT" 127.0.0.1 >/dev/null 2>&1 && break
  sleep 0.1
done

SSH_OPTS=(-i "$KEY" -p "$PORT" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
          -o LogLevel=ERROR -o BatchMode=yes)
export N10N_DEV_HOME="$WORK/state"
# The user's own config: replicas may go under the run's work directory.
export N10N_DEV_CONFIG="$WORK/user-config.toml"
printf '[sync]\nroots = ["%s"]\n' "$WORK" > "$N10N_DEV_CONFIG"
# `up` makes a Docker context: in a config of the run's own, not the user's.
export DOCKER_CONFIG="$WORK/docker-config"

# make_project DIR DEST: an n10n-dev.toml in DIR for this sshd, replica at DEST.
make_project() {
  mkdir -p "$1"
  cat > "$1/n10n-dev.toml" <<TOML
[vm]
backend = "ssh"
name = "bench"
[ssh]
host = "127.0.0.1"
port = $PORT
user = "$USER_NAME"
identity = "$KEY"
[sync]
dest = "$2"
exclude = []
TOML
}

# seconds CMD...: wall time of one run, in seconds.
seconds() {
  local start end
  start=$(date +%s.%N)
  "$@" >/dev/null
  end=$(date +%s.%N)
  echo "$end - $start" | bc -l
}

# median N CMD...: median wall time of N runs.
median() {
  local n=$1; shift
  for _ in $(seq "$n"); do seconds "$@"; done | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'
}

# row NAME OURS ANCHOR: one table line with the ratio.
row() {
  printf '%-28s %10.4f %10.4f %8.3f\n' "$1" "$2" "$3" "$(echo "$2 / $3" | bc -l)"
}

# settle: flush writeback and wait (30 s at most) until the disks have been idle for half a
# second. Deleting a tree on a filesystem mounted with `discard` keeps the disk busy for
# seconds after `sync` returns, and whichever tool ran next paid for it.
settle() {
  sync
  local deadline=$((SECONDS + 30)) last now quiet=0
  last=$(cat /sys/block/*/stat | awk '{ busy += $10 } END { print busy }')
  while [ "$SECONDS" -lt "$deadline" ]; do
    sleep 0.1
    now=$(cat /sys/block/*/stat | awk '{ busy += $10 } END { print busy }')
    if [ "$now" = "$last" ]; then
      quiet=$((quiet + 1))
      [ "$quiet" -ge 5 ] && return 0
    else
      quiet=0
    fi
    last=$now
  done
}

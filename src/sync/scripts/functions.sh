# shellcheck shell=sh disable=SC2154,SC2034 # agent_* are set before; what the functions set, the scripts after them read
# The shell functions the probe and the apply scripts share; remote.rs says what each does.

meta_of() { meta="${1%/*}/.${1##*/}.n10n-dev"; }

unsafe() { echo "unsafe $1"; echo "refusing to sync into $1" >&2; exit "$2"; }

refuse_unsafe() {
  home=$(cd ~ 2>/dev/null && pwd -P) || home=
  case "$1" in
    /|/bin|/boot|/dev|/etc|/home|/lib|/lib64|/media|/mnt|/opt|/proc|/root|/run|/sbin|/srv|/sys|/tmp|/usr|/var|/Users)
      unsafe "$1" "$2" ;;
  esac
  case "$home/" in "$1"/*) unsafe "$1" "$2" ;; esac
  # A directory commands are found in, or one above it: what a sync writes there would run at
  # the next login. PATH as this session has it, and the directories Debian's and Ubuntu's
  # ~/.profile add; compared as written, with builtins only (a probe is on every sync's path).
  rest="$PATH:$home/bin:$home/.local/bin:"
  while [ -n "$rest" ]; do
    entry=${rest%%:*}
    rest=${rest#*:}
    [ -n "$entry" ] || continue
    case "$entry/" in "$1"/*) unsafe "$1" "$2" ;; esac
  done
}

# The working directory's device:inode:birth time, spaces made `_`, in `here`.
take_identity() {
  here=$(stat -c %d:%i:%w .)
  while :; do case $here in *' '*) here="${here%% *}_${here#* }" ;; *) break ;; esac; done
}

# Builtins where a program would do: every process a probe starts is time a no-op sync waits.
identify() {
  take_identity
  id=
  [ -f "$meta/replica-id" ] && { IFS= read -r id < "$meta/replica-id" || :; }
  case "$id" in
    *' '*) where=${id#* }; id=${id%% *} ;;
    *) where= ;;
  esac
  ours=
  [ -n "$id" ] && { [ -z "$where" ] || [ "$where" = "$here" ]; } && ours=1
  [ -n "$ours" ] || id=
}

start_agent() {
  agent=
  served=$1
  # shellcheck disable=SC2046 # split on purpose: the checksum is cksum's first word
  set -- $(printf '%s %s' "$served" "$(id -G "${USER:-$(id -un)}")" | cksum)
  sock="${TMPDIR:-/tmp}/n10n-dev-${N10N_UID:-$(id -u)}/$agent_prefix$1.sock"
  if [ -z "$N10N_AGENT_SOCKET" ]; then
    # Without fd 9: the apply step holds its lock there, and the agent would hold it for as long
    # as it lives.
    perl -e "$agent_script" "$sock" "$served" "$agent_idle" </dev/null >/dev/null 2>&1 9>&- || return 0
  elif [ "$sock" != "$N10N_AGENT_SOCKET" ]; then
    rm -f -- "$N10N_AGENT_SOCKET"
    return 0
  fi
  token=
  [ -f "$sock.token" ] && { IFS= read -r token < "$sock.token" || :; }
  [ -n "$token" ] && agent="$token $sock"
  return 0
}

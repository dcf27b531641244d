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
}

identify() {
  here=$(stat -c %d:%i:%w . | tr ' ' _)
  id=$(cat "$meta/replica-id" 2>/dev/null) || id=
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
  sock="${TMPDIR:-/tmp}/n10n-dev-$(id -u)/$agent_prefix$(printf '%s %s' "$1" \
    "$(id -G "${USER:-$(id -un)}")" | cksum | cut -d ' ' -f 1).sock"
  if [ -z "$N10N_AGENT_SOCKET" ]; then
    perl -e "$agent_script" "$sock" "$1" "$agent_idle" </dev/null >/dev/null 2>&1 || return 0
  elif [ "$sock" != "$N10N_AGENT_SOCKET" ]; then
    rm -f -- "$N10N_AGENT_SOCKET"
    return 0
  fi
  token=$(cat "$sock.token" 2>/dev/null) && [ -n "$token" ] && agent="$token $sock"
  return 0
}

# shellcheck shell=sh disable=SC2154 # d, adopt, marker, ops, apply_script: set before
# The apply step (see apply_command in remote.rs), after functions.sh.
set -e
mkdir -p -- "$d"
cd -- "$d"
root=$(pwd -P)
refuse_unsafe "$root" 3
meta_of "$root"
refuse_foreign() {
  identify
  if [ -z "$ours" ] && [ -z "$adopt" ] && [ -n "$(ls -A)" ]; then
    echo "$root holds files that n10n-dev did not put there; nothing was changed" >&2
    exit 76
  fi
}
# Once before anything is written beside the directory (a first sync starts this step beside
# the probe, before it knows whether the directory is someone else's), once under the lock.
refuse_foreign
# The replica and what n10n-dev keeps beside it are the user's alone (other users of a shared
# host read neither); what is inside gets the user's umask.
chmod 700 .
[ -d "$meta" ] || mkdir -m 700 -- "$meta"
chmod 700 -- "$meta"
exec 9>>"$meta/lock"
flock -w 120 9 || {
  echo "another sync into $root held its lock for 2 minutes; try again" >&2
  exit 75
}
refuse_foreign
rm -rf -- "$meta/staging" "$meta"/staging.* "$meta".new.*
# Into an empty replica that gets a new id (a first sync), the archive goes into a fresh
# directory beside it, which then takes the replica's place in one rename. On ext4 without a
# journal, staging 10,000 files under the long-lived "$meta" after a replica of as many was
# deleted took tar 2.4-2.8 s (a profile showed its inode allocation skipping recently deleted
# inodes); into a fresh directory, 0.16 s.
if [ -n "$marker" ] && [ -z "$(ls -A)" ]; then
  s=$(mktemp -d "$meta.new.XXXXXX")
  fresh=yes
else
  s=$(mktemp -d "$meta/staging.XXXXXX")
  fresh=
fi
# The agent starts while the archive arrives, not after it.
start_agent "$root"
# A pipe of 1 MiB (F_SETPIPE_SZ, the most a user may ask for) instead of 64 KiB: sshd keeps what
# the pipe cannot take in a buffer that it grows by one packet at a time, copying all of it into
# fresh pages at each step (up to 4 MiB with its 2 MiB window). Where stdin is no pipe, nothing.
perl -e "fcntl(STDIN, 1031, 1 << 20)" 2>/dev/null || :
tar -x -f - -C "$s" --no-same-owner
replaced=$(perl -e "$apply_script" "$s" "$s/$ops" "$fresh" "$root")
if [ -n "$marker" ]; then
  if [ -n "$replaced" ]; then cd -- "$root"; take_identity; fi
  printf '%s %s' "$marker" "$here" > "$meta/replica-id.new"
  mv -f -- "$meta/replica-id.new" "$meta/replica-id"
fi
rm -rf -- "$s"
echo "applied $agent"

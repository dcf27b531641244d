# shellcheck shell=sh disable=SC2154 # d, expected_id, legacy_marker, lister_script are set before
# The probe (see probe_command in remote.rs), after functions.sh.
root=
if [ -d "$d" ]; then cd -- "$d" && root=$(pwd -P); fi
if [ -z "$root" ]; then echo 'list '; exit 0; fi
refuse_unsafe "$root" 0
meta_of "$root"
if [ -f "$legacy_marker" ]; then
  mkdir -p -- "$meta" && mv -f -- "$legacy_marker" "$meta/replica-id"
fi
identify
if [ -z "$ours" ] && [ -n "$(ls -A)" ]; then
  # shellcheck disable=SC2012 # a count: the names do not matter
  echo "foreign $(ls -A | wc -l)"
  perl -e "$lister_script"
  exit 0
fi
start_agent "$root"
if [ -n "$id" ] && [ "$id $where" = "$expected_id $here" ]; then echo "same $agent"; exit 0; fi
echo "list $agent"
perl -e "$lister_script"

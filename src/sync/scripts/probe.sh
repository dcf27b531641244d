# shellcheck shell=sh disable=SC2154 # d, expected_id, dry_run, lister_script are set before
# The probe (see probe_command in remote.rs), after functions.sh.
root=
if [ -d "$d" ]; then cd -- "$d" && root=$(pwd -P); fi
if [ -z "$root" ]; then echo 'list '; exit 0; fi
refuse_unsafe "$root" 0
meta_of "$root"
identify
if [ -z "$ours" ] && [ -n "$(ls -A)" ]; then
  # shellcheck disable=SC2012 # a count: the names do not matter
  echo "foreign $(ls -A | wc -l)"
  perl -e "$lister_script"
  exit 0
fi
# A dry run changes nothing on the machine: no helper is started for it.
agent=
[ -n "$dry_run" ] || start_agent "$root"
if [ -n "$id" ] && [ "$id $where" = "$expected_id $here" ]; then echo "same $agent"; exit 0; fi
echo "list $agent"
perl -e "$lister_script"

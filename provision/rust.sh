#!/bin/sh
# A C toolchain (root) and rustup's stable Rust for the build user, on Debian or Ubuntu, run as
# root. The user is N10N_USER, else Lima's LIMA_CIDATA_USER, else SUDO_USER. Idempotent.
set -eu
export DEBIAN_FRONTEND=noninteractive
user=${N10N_USER:-${LIMA_CIDATA_USER:-${SUDO_USER:-}}}
[ -n "$user" ] || { echo "rust.sh: set N10N_USER to the build user" >&2; exit 2; }

installed() { dpkg-query -W -f '${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

missing=""
for package in build-essential pkg-config libssl-dev curl ca-certificates; do
  installed "$package" || missing="$missing $package"
done
if [ -n "$missing" ]; then
  echo "installing:$missing"
  apt-get update -q
  # shellcheck disable=SC2086 # a list of package names
  apt-get install -y -q --no-install-recommends $missing
fi

# rustup lives in the user's home; its installer adds ~/.cargo/bin to ~/.profile, which the
# login shells n10n-dev runs commands in read. $HOME must expand as that user, hence the quotes.
# shellcheck disable=SC2016
runuser -u "$user" -- sh -eu -c '
  if [ -x "$HOME/.cargo/bin/rustup" ]; then
    "$HOME/.cargo/bin/rustup" toolchain install stable --profile minimal --no-self-update
  else
    curl --proto "=https" --tlsv1.2 -fsSL https://sh.rustup.rs \
      | sh -s -- -y --profile minimal --default-toolchain stable
  fi
  "$HOME/.cargo/bin/rustc" --version
'

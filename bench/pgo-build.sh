#!/usr/bin/env bash
# A profile-guided build of the vault (the production profile, then optimized again by what a
# training run of the benchmark's proxy and tokenize phases executed most):
#   bench/pgo-build.sh      → target/pgo/cardvault (about 25 minutes cold on two cores)
# Three steps: a build that counts what it runs, the training run against it (SQLite always;
# PostgreSQL + Redis too when they are up, as bench/run.sh starts them), and the build that uses
# the counts. bench/run.sh builds with this and measures the result (unless `--no-pgo`).
set -euo pipefail
cd "$(dirname "$0")/.."

host=$(rustc -vV | sed -n 's/^host: //p')
# The llvm-profdata of the compiler's own LLVM version: the profiles' format is versioned.
# LLVM_PROFDATA names another (e.g. a distribution's rustc with its matching LLVM).
profdata="${LLVM_PROFDATA:-$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata}"
if [ ! -x "$profdata" ]; then
  if ! command -v rustup >/dev/null 2>&1; then
    echo "no llvm-profdata at $profdata: install rustup's llvm-tools, or set LLVM_PROFDATA" >&2
    exit 1
  fi
  rustup component add llvm-tools
fi
out="$PWD/target/pgo"
mkdir -p "$out"

# The generator and the stack alone (not instrumented: their counts would be noise in the
# vault's profile).
cargo build --profile production --locked -p cardvault-bench

# `--target` keeps RUSTFLAGS off the build scripts and procedural macros; each build has a
# target directory of its own, so neither recompiles the other's dependency tree.
RUSTFLAGS="-Cprofile-generate=$out/profiles" \
  cargo build --profile production --locked --target "$host" --target-dir "$out/generate" \
  -p cardvault-server

rm -rf "$out/profiles"
mkdir -p "$out/profiles"
backends=()
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null \
  || ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "PostgreSQL or Redis is not up: training on SQLite + memory only" >&2
  backends=(--skip-postgres)
fi
# The training vaults take their settings from the benchmark alone, not from a deployment's
# environment (a CARDVAULT_DATABASE_URL would turn the SQLite phase into PostgreSQL).
for name in $(compgen -e | grep '^CARDVAULT_' || true); do unset "$name"; done
# The benchmark stops each vault with SIGTERM; the instrumented vault writes its counts then.
LLVM_PROFILE_FILE="$out/profiles/%p.profraw" \
  CARDVAULT_BIN="$out/generate/$host/production/cardvault" \
  target/production/cardvault-bench --skip-nginx --skip-bare --tokens 0 --rates 1000 \
  "${backends[@]}" >"$out/training.md"
"$profdata" merge -o "$out/merged.profdata" "$out/profiles"

RUSTFLAGS="-Cprofile-use=$out/merged.profdata" \
  cargo build --profile production --locked --target "$host" --target-dir "$out/use" \
  -p cardvault-server
cp "$out/use/$host/production/cardvault" "$out/cardvault"
echo "built $out/cardvault" >&2

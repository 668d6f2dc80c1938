#!/usr/bin/env bash
# The load benchmark, one command on a fresh machine: installs nginx (the ceiling), makes sure
# PostgreSQL and Redis are up, builds the binaries (Cargo.toml's production profile, the vault
# then profile-guided by bench/pgo-build.sh), and prints the table of figures.
#   bench/run.sh                  full run (about 15 minutes, 35–40 cold: two builds of the vault)
#   bench/run.sh --quick          3-second measurements, to check it works
#   bench/run.sh --tokens 10000,1000000,10000000   add the 10 M stored-token case (slow to load)
#   bench/run.sh --instructions 2000   instructions a call under callgrind (nginx, stack alone, vault on both backends)
#   bench/run.sh --no-pgo         the production profile's vault without the profile-guided pass (~12 minutes less cold)
# Loopback only: the processor stub, nginx and the vault all listen on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

pgo=true
args=()
for arg in "$@"; do
  if [ "$arg" = --no-pgo ]; then pgo=false; else args+=("$arg"); fi
done

if ! command -v nginx >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null 2>&1 \
    || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null
fi
# `--instructions N` serves each target under callgrind.
if [[ " ${args[*]} " == *" --instructions"* ]] && ! command -v valgrind >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
fi
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no || true
fi

# The independent load generator the latency figures are checked against (crates.io, built once
# into target/tools; a few minutes the first time).
if [ ! -x target/tools/bin/oha ]; then
  cargo install --quiet --locked --root target/tools oha --version 1.16.0
fi
# Flame graphs from `perf script` (docs/benchmarks.md, "Where the CPU goes").
if [ ! -x target/tools/bin/inferno-flamegraph ]; then
  cargo install --quiet --locked --root target/tools inferno --version 0.12.8
fi

# The production profile (Cargo.toml), link-time optimized: the stack alone and the generator
# are built with it, and the vault is built by bench/pgo-build.sh, guided by a training run's
# profile (as the README's deployment does; with `--no-pgo` or a CARDVAULT_BIN, not).
if $pgo && [ -z "${CARDVAULT_BIN:-}" ]; then
  bench/pgo-build.sh  # builds the generator and the stack alone too
  export CARDVAULT_BIN="$PWD/target/pgo/cardvault"
else
  cargo build --profile production --locked -p cardvault-server -p cardvault-bench
fi
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r)" >&2
export CARDVAULT_BIN="${CARDVAULT_BIN:-$PWD/target/production/cardvault}"
echo "vault: $CARDVAULT_BIN" >&2
# The vault and the stack alone read their serving threads from the environment (README: one
# per core unless set).
echo "serving threads (the vault's and the stack alone's): ${CARDVAULT_WORKER_THREADS:-one per core}" >&2
exec target/production/cardvault-bench "${args[@]}"

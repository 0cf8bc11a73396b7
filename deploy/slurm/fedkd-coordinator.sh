#!/usr/bin/env bash
# fedkd-coordinator.sh — the fedkd coordinator as a Slurm job. It writes the
# endpoint clients should use to $FKD_DIR/endpoint, so the client array
# (fedkd-clients.sh) finds it. docs/cluster.md shows the whole run.
#   sbatch --export=ALL,FKD_DIR=/shared/fedkd deploy/slurm/fedkd-coordinator.sh
#SBATCH --job-name=fedkd-coordinator
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=4
#SBATCH --mem=8G
#SBATCH --time=12:00:00
set -euo pipefail
: "${FKD_DIR:?set FKD_DIR to the shared folder with coordinator.conf and keys/}"
port=${FKD_PORT:-7878}
echo "tcp://$(hostname -f):$port" > "$FKD_DIR/endpoint.tmp"
mv "$FKD_DIR/endpoint.tmp" "$FKD_DIR/endpoint"
# A resubmitted job resumes from the last completed round in state/.
exec fedkd serve --config "$FKD_DIR/coordinator.conf" "endpoint=tcp://*:$port" \
  "key=$FKD_DIR/keys/coordinator.key" "allowlist=$FKD_DIR/keys/allowlist" \
  "state_dir=$FKD_DIR/state"

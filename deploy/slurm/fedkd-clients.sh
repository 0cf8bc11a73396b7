#!/usr/bin/env bash
# fedkd-clients.sh — virtual fedkd clients as a Slurm job array: each array
# task runs M agents (FKD_CLIENTS_PER_TASK, default 8), each a fedkd-client
# process connecting to the coordinator over TCP like a real device. Task i
# runs clients i*M .. i*M+M-1; client c uses keys/client-c.key and trains on
# natural client c of the corpus in $FKD_DATA. docs/cluster.md shows the run.
#   sbatch --array=0-7 --dependency=after:COORDJOB \
#     --export=ALL,FKD_DIR=/shared/fedkd deploy/slurm/fedkd-clients.sh
#SBATCH --job-name=fedkd-clients
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=2
#SBATCH --mem=4G
#SBATCH --time=12:00:00
set -euo pipefail
: "${FKD_DIR:?set FKD_DIR to the shared folder with client.conf and keys/}"
: "${SLURM_ARRAY_TASK_ID:?submit as an array: sbatch --array=0-N ...}"
m=${FKD_CLIENTS_PER_TASK:-8}
data=${FKD_DATA:-/usr/share/games/fortunes}
for _ in $(seq 1 60); do [ -s "$FKD_DIR/endpoint" ] && break; sleep 5; done
endpoint=$(cat "$FKD_DIR/endpoint")
scratch=${TMPDIR:-/tmp}/fedkd-$SLURM_JOB_ID
first=$((SLURM_ARRAY_TASK_ID * m))
pids=()
for c in $(seq "$first" $((first + m - 1))); do
  fedkd-client --config "$FKD_DIR/client.conf" "endpoint=$endpoint" \
    "key=$FKD_DIR/keys/client-$c.key" "coordinator=$FKD_DIR/keys/coordinator.pub" \
    "data=$data" "client=$c" "state_dir=$scratch/client-$c" &
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
exit $rc

#!/usr/bin/env bash
# run_guide.sh [DIR] — runs docs/guide.md section 3 as written, on one host:
# the teacher, soft labels, keys, a coordinator on port 7979 and two clients
# (as separate processes) for five rounds, then eval and generate. Takes
# about 11 minutes on 2 cores; not part of ctest. FKD_BIN: where fedkd and
# fedkd-client are (default build/).
set -euo pipefail
export PATH=${FKD_BIN:-$(cd "$(dirname "$0")/../.." && pwd)/build}:$PATH
R=${1:-$(mktemp -d)}; rm -rf "$R/server" "$R/phone1" "$R/phone2" "$R/exits"
mkdir -p $R/server && cd $R/server
date -u +%T; fedkd teacher train --out teacher.ckpt 2>&1 | tail -2
date -u +%T; fedkd teacher softlabels --teacher teacher.ckpt --out softlabels --max-tokens 8192 2>&1 | tail -3
date -u +%T; fedkd keygen --out coordinator --label coordinator
for p in phone1 phone2; do mkdir -p $R/$p; (cd $R/$p && fedkd-client --keygen $p && cp $p.pub $R/server/ && cp $R/server/coordinator.pub .); done
cat phone1.pub phone2.pub > allowlist
cat > coordinator.conf <<'C'
endpoint = tcp://*:7979
key = coordinator.key
allowlist = allowlist
state_dir = state
softlabels = softlabels/shard-000.fkds
rounds = 5
min_clients = 2
local_steps = 5
C
fedkd serve --config coordinator.conf --print-config | head -4
fedkd serve --config coordinator.conf > serve.log 2>&1 & sp=$!
n=0
for p in phone1 phone2; do
  cat > $R/$p/client.conf <<C
endpoint = tcp://127.0.0.1:7979
coordinator = coordinator.pub
key = $p.key
data = /usr/share/games/fortunes
client = $n
state_dir = state
C
  n=$((n+1))
  (cd $R/$p && fedkd-client --config client.conf > client.log 2>&1; echo "$p exit $?" >> $R/exits) &
done
wait $sp; echo "serve exit $?"; sleep 2; cat $R/exits
grep -E "round_end|training_done" serve.log
fedkd eval --model state/master.ckpt --max-tokens 4096 --prompts 0 2>&1 | grep -i perplex | head -3
fedkd generate --model state/master.ckpt --prompt "The best" --tokens 60 | tail -1
ls state; date -u +%T

#!/usr/bin/env bash
# The comparison grid: every (dataset, protocol, backbone, method, seed) run through the method files, each
# writing results/runs/<grid>/<run>/results.json, then results/RESULTS.md and the plots.
#
#   ./run_all.sh --quick                      # small grid on synthetic data, ~1 minute: the smoke check
#   ./run_all.sh --data-dir ../shared/data    # the full grid (hours on a CPU); resumable
#   ./run_all.sh --dry-run                    # list what would run, resume, and what is already done
#   ./run_all.sh --grid icpns-ml100k          # one grid: icpns-ml100k, mdcns-beauty, ml1m-loo (default: all)
#   ./run_all.sh --runs DIR                   # keep the runs in DIR (default results/runs; --quick: a new
#                                             # temporary folder every time)
#   ./run_all.sh --seeds "1 2"                # override every grid's seeds
#
# Resumable across sessions: a run whose results.json exists is skipped; a run with a checkpoint.pt but no
# results.json continues from it (--resume), so a grid cut short loses at most one validation interval of one
# run. Ctrl-C or SIGTERM stops the whole grid: the current run saves its checkpoint first. Epoch budgets are CPU
# budgets, below the papers' (see results/RESULTS.md, which states the epochs actually run). Set PYTHON to
# choose the interpreter.
set -euo pipefail
cd "$(dirname "$0")"

QUICK=0; DRY=0; DATA_DIR=data; GRID=all; SEEDS=""; RUNS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --dry-run) DRY=1 ;;
    --data-dir) DATA_DIR="$2"; shift ;;
    --grid) GRID="$2"; shift ;;
    --seeds) SEEDS="$2"; shift ;;
    --runs) RUNS="$2"; shift ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
PYTHON="${PYTHON:-python}"
if [ -z "$RUNS" ] && [ "$QUICK" = 1 ]; then
  RUNS=$(mktemp -d "${TMPDIR:-/tmp}/negsampling-quick.XXXXXX")   # a smoke check never reuses old runs
  echo "quick grid in $RUNS"
fi
RUNS="${RUNS:-results/runs}"

# Ctrl-C (SIGINT) or SIGTERM: the running method file gets SIGTERM, saves its checkpoint, and the grid stops
child=""
stop_grid() {
  trap - INT TERM
  echo "interrupted: stopping the grid; run the same command again to continue" >&2
  if [ -n "$child" ]; then kill -TERM "$child" 2>/dev/null || true; wait "$child" || true; fi
  exit "$1"
}
trap 'stop_grid 130' INT
trap 'stop_grid 143' TERM

# command of a method: the method file and its method flag
method_command() {
  case "$1" in
    rns|pns|dns|dnsmn) echo "baselines.py --sampler $1" ;;
    icpns) echo "icpns.py" ;;
    mdcns) echo "mdcns.py" ;;
    *) echo "error: unknown method $1" >&2; exit 2 ;;
  esac
}

# grid lines: grid dataset split backbone method seed -- extra flags
grid_lines() {
  if [ "$QUICK" = 1 ]; then
    for m in rns pns dns icpns; do
      echo "quick synthetic ratio lightgcn $m 1 -- --epochs 3 --pretrain-epochs 3 --dim 16"
    done
    for m in rns dnsmn mdcns; do
      echo "quick synthetic user sasrec $m 1 -- --epochs 3 --dim 16 --max-len 20"
    done
    return
  fi
  local seeds
  # 1. ICPNS protocol on ml-100k: rating >= 3, 10-core (the loader's ml-100k default), ratio split, NDCG@10.
  #    CPU budget: lr 5e-3 instead of the official 1e-3, at most 200 epochs per stage, validation every 5 epochs,
  #    stop at the 7th validation in a row without improvement (--patience 6: 35 epochs). At lr 1e-3 LightGCN's
  #    validation NDCG@10 was still rising at epoch 300 (0.225; the official budget is 1000 epochs, patience 100);
  #    at 5e-3 it peaks near epoch 100 (0.232); at 1e-2 near epoch 50, then falls. Validation dips after epoch 2
  #    before it climbs, so patience counted in single epochs stops far too early.
  seeds="${SEEDS:-1 2 3}"
  for b in lightgcn mf; do for m in rns pns dns icpns; do for s in $seeds; do
    echo "icpns-ml100k ml-100k ratio $b $m $s -- --valid-metric ndcg@10 --ks 10,20 --lr 5e-3 --epochs 200 --eval-every 5 --patience 6 --pretrain-epochs 200 --pretrain-patience 6 --batch-size 4096"
  done; done; done
  # 2. MDCNS protocol on Beauty: user split, history masked, BCE, SASRec as in the MDCNS code, NDCG@20
  seeds="${SEEDS:-42 43 44}"   # the paper's seed 42, then two more
  for m in rns dnsmn mdcns; do for s in $seeds; do
    echo "mdcns-beauty beauty user sasrec $m $s -- --loss bce --dim 64 --heads 2 --dropout 0.5 --max-len 50 --valid-metric ndcg@20 --patience 30 --epochs 20 --top-m 1"
  done; done
  # 3. ml-1m (SASRec's ml-1m.txt), leave-one-out, SASRec's own ml-1m settings (L = 200, D = 50, 1 head, dropout
  #    0.2, 128 sequences per batch) spelled out, because mdcns.py's defaults are the MDCNS protocol's; BPR for
  #    every method; 5 epochs: a CPU budget
  seeds="${SEEDS:-1 2 3}"
  for m in rns dnsmn mdcns icpns; do for s in $seeds; do
    echo "ml1m-loo ml-1m loo sasrec $m $s -- --max-len 200 --dim 50 --heads 1 --dropout 0.2 --batch-size 128 --loss bpr --valid-metric ndcg@10 --epochs 5 --pretrain-epochs 5 --eval-every 1"
  done; done
}

# flags only some methods take are dropped for the others (--pretrain-* is ICPNS's; --top-m 1 is MDCNS's
# published M, while the DNS(M,N) baseline keeps its own default M)
filter_flags() {
  local method="$1"; shift
  local out=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --pretrain-epochs|--pretrain-patience) [ "$method" = icpns ] && out+=("$1" "$2"); shift 2; continue ;;
      --top-m) [ "$method" = mdcns ] && out+=("$1" "$2"); shift 2; continue ;;   # MDCNS's published M
    esac
    out+=("$1"); shift
  done
  echo "${out[@]}"
}

todo=0; done_=0
while read -r grid dataset split backbone method seed _ extra; do
  [ "$GRID" = all ] || [ "$GRID" = "$grid" ] || [ "$QUICK" = 1 ] || continue
  dir="$RUNS/$grid/$dataset-$split-$backbone-$method-s$seed"
  if [ -f "$dir/results.json" ]; then
    done_=$((done_ + 1)); [ "$DRY" = 1 ] && echo "done  $dir"; continue
  fi
  todo=$((todo + 1))
  state=todo; resume=""
  if [ -f "$dir/checkpoint.pt" ]; then state=resume; resume=" --resume"; fi   # stopped mid-way: continue it
  cmd="$PYTHON $(method_command "$method") --dataset $dataset --data-dir $DATA_DIR --split $split --backbone $backbone --seed $seed --quiet --out-dir $dir $(filter_flags "$method" $extra)$resume"
  if [ "$DRY" = 1 ]; then echo "$state  $cmd"; continue; fi
  echo "[$(date +%H:%M:%S)] $cmd"
  mkdir -p "$dir"
  # in the background, so that the traps above run at once; the log of a resumed run continues its own
  $cmd >> "$dir/log.txt" 2>&1 &
  child=$!
  if ! wait "$child"; then
    echo "  failed: see $dir/log.txt" >&2; tail -n 2 "$dir/log.txt" >&2
  fi
  child=""
done < <(grid_lines)

echo "$done_ runs already done, $todo to run or resume$([ "$DRY" = 1 ] && echo ' (dry run)')"
if [ "$DRY" = 0 ]; then
  $PYTHON results/aggregate.py --runs "$RUNS" --out "$([ "$QUICK" = 1 ] && echo "$RUNS" || echo results)"
fi

#!/usr/bin/env bash
# The comparison grids: every (dataset, protocol, backbone, method, seed) run through the method files, each
# writing results/runs/<grid>/<dataset>-<split>-<backbone>-<method>-s<seed>/results.json, then results/RESULTS.md
# and the plots (results/aggregate.py).
#
#   ./run_all.sh --quick                      # small grid on synthetic data, ~1 minute: the smoke check
#   ./run_all.sh --data-dir DIR               # every grid (days on a CPU), resumable; DIR holds the datasets
#   ./run_all.sh --grid ablation              # one grid (default: all); the grids are listed below
#   ./run_all.sh --dataset lastfm             # only the runs on one dataset (default: all)
#   ./run_all.sh --method rns                 # only the runs of one method, as the folder names it (the M
#                                             # sweeps' are dnsmn-m5, gnno-m5, ...) (default: all)
#   ./run_all.sh --dry-run                    # list what would run, resume, and what is already done
#   ./run_all.sh --check                      # does every done run's results.json hold the flags its grid line
#                                             # gives today? (one line per difference; exit 1 if any)
#   ./run_all.sh --runs DIR                   # keep the runs in DIR (default results/runs; --quick: a new
#                                             # temporary folder every time)
#   ./run_all.sh --seeds "1 2"                # override every grid's seeds
#   ./run_all.sh --grid table3 & ./run_all.sh --grid table3 &   # two runs at a time (a lock per run)
#
# The grids: what each reproduces -> its note in results/notes/ (the paper's cell beside ours, every gap explained)
#   icpns-ml100k          ICPNS, RNS, PNS, DNS on ml-100k, MF and LightGCN, CPU budget -> ml-100k-ratio-{mf,lightgcn}
#   icpns-leak            the same at official schedules, with and without the official pipeline's held-out leak
#                         (--exclude-held-out) -> ml-100k-ratio-{mf,lightgcn}-icpns-leak
#   icpns-leak-ml1m       the leak on ml-1m, LightGCN, RNS and ICPNS (no note)
#   ngcf-ml100k           ICPNS and RNS on NGCF, ml-100k -> ml-100k-ratio-ngcf-ngcf-ml100k
#   table3                MDCNS Table 3: Beauty, Sports, LastFM, SASRec, every sampler -> *-sasrec-table3
#   dnsplus-sweep         DNS+'s M chosen on validation, for table3 (shown in table3's section); likewise
#   mixgcfplus-sweep      MixGCF+'s M and
#   gnno-sweep            GNNO's M
#   table4                MDCNS Table 4: Beauty and Sports, LinRec, FMLP4Rec as the self model -> *-user-*-table4
#   table3-paired         Table 3's MDCNS, DNS+ and RNS again, with per-row test results (the paired comparisons)
#   ablation              MDCNS Table 6: w/o CD, w/o CD-DR (and DNS+ at M = 10), Beauty and Sports -> *-sasrec-ablation
#   weak-peer             MDCNS Table 7: a GRU4Rec peer, Beauty, Sports, LastFM -> *-sasrec-weak-peer
#   table5                MDCNS Table 5: BPR, Beauty, SASRec, GRU4Rec, Mamba4Rec self -> beauty-user-*-table5
#   dnsplus-bpr-*-sweep   DNS+'s M at BPR per backbone (sasrec, gru4rec, mamba4rec), for table5
#   dnsplus-m10           DNS+ at the official logs' M = 10, Beauty and Sports (SASRec; Sports' FMLP4Rec too)
#                         -> *-dnsplus-m10
#   dns-warmup            DNS(1, 100) after 30 epochs of uniform negatives -> *-sasrec-dns-warmup
#   mixgcf-bpr            MixGCF at BPR, the released script's loss -> beauty-user-sasrec-mixgcf-bpr
#   mixgcfplus-bpr-sweep  MixGCF+'s M at BPR, then
#   mixgcfplus-bpr        MixGCF+ at BPR, converged -> beauty-user-sasrec-mixgcfplus-bpr
#   prefix-rows           RNS on one row per prefix, as the MDCNS code trains -> beauty-user-sasrec-table3
#   mdcns-beauty          Beauty with Kang's SASRec block, 20 epochs (the block's "before") -> beauty-user-sasrec
#   ml1m-loo              ml-1m leave-one-out, Kang's SASRec, BPR, 5 epochs -> ml-1m-loo-sasrec
#   ml1m-loo-s3rec        its collapsed seeds with the S3-Rec block -> ml-1m-loo-sasrec-ml1m-loo-s3rec
#   ml1m-loo-excluded     its collapsed seeds without held-out negatives -> ml-1m-loo-sasrec-ml1m-loo-excluded
#   ml1m-user             the main command, python mdcns.py --dataset ml-1m, 8 epochs, and RNS
#                         -> ml-1m-user-sasrec-ml1m-user
#
# Resumable across sessions: a run whose results.json exists is skipped; a run with a checkpoint.pt but no
# results.json continues from it (--resume), so a grid cut short loses at most one validation interval of one
# run. Ctrl-C or SIGTERM stops the whole grid: the current run saves its checkpoint first. Epoch budgets are CPU
# budgets, below the papers' (see results/RESULTS.md, which states the epochs actually run), except icpns-leak's
# and the MDCNS tables'. A run with --exclude-held-out (a leak of held-out items, reproducing the official ICPNS
# pipeline) has "-leak" after its method in its folder name. Set PYTHON to choose the interpreter.
set -euo pipefail
cd "$(dirname "$0")"

args=("$@")
QUICK=0; DRY=0; CHECK=0; DATA_DIR=data; GRID=all; DATASET=all; METHOD=all; SEEDS=""; RUNS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --dry-run) DRY=1 ;;
    --check) CHECK=1 ;;
    --data-dir) DATA_DIR="$2"; shift ;;
    --grid) GRID="$2"; shift ;;
    --dataset) DATASET="$2"; shift ;;
    --method) METHOD="$2"; shift ;;
    --seeds) SEEDS="$2"; shift ;;
    --runs) RUNS="$2"; shift ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
    *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
PYTHON="${PYTHON:-python}"
# --check: the dry run's list, each done run's command compared with the config in its results.json
if [ "$CHECK" = 1 ]; then
  bash run_all.sh "${args[@]/--check/--dry-run}" | $PYTHON results/aggregate.py --check-commands -
  exit 0
fi
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
    rns|pns|dns|dnsmn|mixgcf|mixgcfmn|adasir|gnno|srns) echo "baselines.py --sampler $1" ;;
    dnsmn-m*) echo "baselines.py --sampler dnsmn" ;;
    mixgcfmn-m*) echo "baselines.py --sampler mixgcfmn" ;;
    gnno-m*) echo "baselines.py --sampler gnno" ;;
    icpns) echo "icpns.py" ;;
    mdcns|mdcns-*) echo "mdcns.py" ;;   # mdcns-no-cd, mdcns-gru4rec-peer, ...: MDCNS with its grid line's flags
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
  #    ICPNS fine-tunes at the same lr with K = 8, α = 0.8 on both backbones, as these runs were made.
  seeds="${SEEDS:-1 2 3}"
  local icpns_flags
  for b in lightgcn mf; do for m in rns pns dns icpns; do for s in $seeds; do
    icpns_flags=""; [ "$m" != icpns ] || icpns_flags="--finetune-lr 5e-3 --communities 8 --alpha 0.8"
    echo "icpns-ml100k ml-100k ratio $b $m $s -- --valid-metric ndcg@10 --ks 10,20 --lr 5e-3 --epochs 200 --eval-every 5 --patience 6 --pretrain-epochs 200 --pretrain-patience 6 --batch-size 4096 $icpns_flags"
  done; done; done
  # 2. MDCNS protocol on Beauty, 20 epochs, Kang's SASRec block (the grid of 2026-12-02, kept as the "before" of
  #    the s3rec block): user split, history masked, BCE, NDCG@20; DNS(M,N) at baselines.py's M = 5
  seeds="${SEEDS:-42 43 44}"   # the paper's seed 42, then two more
  for m in rns dnsmn mdcns; do for s in $seeds; do
    echo "mdcns-beauty beauty user sasrec $m $s -- --sasrec-block kang --loss bce --dim 64 --heads 2 --dropout 0.5 --max-len 50 --valid-metric ndcg@20 --patience 30 --epochs 20 $([ $m = mdcns ] && echo --top-m 1)"
  done; done
  # 3. ml-1m (SASRec's ml-1m.txt), leave-one-out, SASRec's own ml-1m settings (L = 200, D = 50, 1 head, dropout
  #    0.2, 128 sequences per batch) spelled out, because mdcns.py's defaults are the MDCNS protocol's; BPR for
  #    every method; 5 epochs: a CPU budget
  seeds="${SEEDS:-1 2 3}"
  for m in rns dnsmn mdcns icpns; do for s in $seeds; do
    echo "ml1m-loo ml-1m loo sasrec $m $s -- --sasrec-block kang --max-len 200 --dim 50 --heads 1 --dropout 0.2 --batch-size 128 --loss bpr --valid-metric ndcg@10 --epochs 5 --pretrain-epochs 5 --eval-every 1"
  done; done
  # 4. MDCNS Table 3 (Beauty, Sports, LastFM): the s3rec SASRec block and the MDCNS protocol (user split 70/20/10,
  #    history masked, BCE, D 64, 2 heads, dropout 0.5, L 50, ~1024 examples per batch as the code, NDCG@20),
  #    every row early-stopped as the code does: MDCNS after 30 validations without improvement, <= 300 epochs
  #    (MDCNS_Code/main.py), the baselines after 50, <= 500 epochs (Baselines/Neg_samples_DNS+/run_finetune_full.py;
  #    --patience P stops at the (P+1)-th, RecBole's rule). Beauty's seed-42 RNS and DNS rows ran with patience 30
  #    and 300 epochs before this was read. DNS = DNS(1, 100); DNS+ = DNS(M, 100) with M chosen
  #    by the dnsplus-sweep grid on validation (seed 42, 20 epochs per M: a stated equal budget); MDCNS with the
  #    published gamma, tau per dataset and M = 1.
  local table3="--loss bce --valid-metric ndcg@20 --ks 5,10,20 --examples-per-batch 1024"
  local mdcns_stop="--epochs 300 --patience 29" baseline_stop="--epochs 500 --patience 49"
  #    LastFM uses the MDCNS code's own LastFM protocol (--split user-prefixes: users in file order 80/10/10, every
  #    prefix of a held-out user evaluated; results/notes/lastfm-user-prefixes-sasrec-table3.md).
  for d in "beauty 1.0 1.0 user" "sports 3.0 1.0 user" "lastfm 0.3 5.0 user-prefixes"; do
    set -- $d
    for s in ${SEEDS:-42 43 44}; do
      echo "table3 $1 $4 sasrec mdcns $s -- $table3 $mdcns_stop --gamma $2 --kd-temperature $3 --top-m 1"
      echo "table3 $1 $4 sasrec rns $s -- $table3 $baseline_stop"
      echo "table3 $1 $4 sasrec dns $s -- $table3 $baseline_stop --candidates 100"
      local best; best=$(best_m dnsplus-sweep "$1" 14)
      [ -n "$best" ] && echo "table3 $1 $4 sasrec dnsmn $s -- $table3 $baseline_stop --candidates 100 --top-m $best"
    done
    # MDCNS's other Table 3 baselines, on Beauty, at the MDCNS code's settings (baselines.py's
    # defaults: N = 100 for mixgcf, mixgcfmn, gnno; 200 adasir; 500 srns); MixGCF+ and GNNO at the M chosen by
    # their sweeps below (the MDCNS code's M search, seed 42, 20 epochs per M, as DNS+'s), waiting for them
    if [ "$1" = beauty ]; then
      local best_mixgcf best_gnno
      best_mixgcf=$(best_m mixgcfplus-sweep "$1" 19); best_gnno=$(best_m gnno-sweep "$1" 18)
      for s in ${SEEDS:-42 43 44}; do
        for m in mixgcf adasir srns; do echo "table3 $1 $4 sasrec $m $s -- $table3 $baseline_stop"; done
        [ -n "$best_mixgcf" ] && echo "table3 $1 $4 sasrec mixgcfmn $s -- $table3 $baseline_stop --top-m $best_mixgcf"
        [ -n "$best_gnno" ] && echo "table3 $1 $4 sasrec gnno $s -- $table3 $baseline_stop --top-m $best_gnno"
      done
      for m in 1 2 3 4 5 6 7 8 9 10 15 20 25 30 35 40 45 50 100; do
        echo "mixgcfplus-sweep $1 $4 sasrec mixgcfmn-m$m 42 -- $table3 --epochs 20 --patience 20 --top-m $m"
      done
      for m in 1 2 3 4 5 6 7 8 9 10 15 20 25 30 35 40 45 50; do
        echo "gnno-sweep $1 $4 sasrec gnno-m$m 42 -- $table3 --epochs 20 --patience 20 --top-m $m"
      done
    fi
    for m in 1 2 3 4 5 10 20 30 40 50 60 70 80 90; do
      echo "dnsplus-sweep $1 $4 sasrec dnsmn-m$m 42 -- $table3 --epochs 20 --patience 20 --candidates 100 --top-m $m"
    done
  done
  # 5. icpns-leak: how much of ICPNS's gain is the official pipeline's exclusion of each user's
  #    validation and test items from the negatives, given here to every method (--exclude-held-out, "-leak" runs)
  #    and withheld from all (clean). The official schedules, validation every epoch: icpns.py's defaults are the
  #    backbone's official config (LightGCN.yaml; BPR.yaml for MF), and the baselines train with its stage-1
  #    schedule (lr 1e-3, at most 1000 epochs; lightgcn batch 4096, patience 100; mf batch 40960, patience 20).
  #    Pre-training ignores the flag (the official one avoids training items only), so the leak run of ICPNS
  #    fine-tunes the clean run's pretrained.pt, listed (and so run) first.
  seeds="${SEEDS:-1 2 3}"
  icpns_leak_lines icpns-leak ml-100k mf lightgcn   # MF first: ~10x cheaper per run
  # 6. table4: MDCNS Table 4 on Beauty, the other sequential backbones (LinRec, FMLP4Rec) as the self
  #    model, peer Mamba4Rec, at table3's protocol and budget: RNS, DNS+ (the dnsplus-sweep's M on SASRec, as the
  #    paper reuses one M per dataset: inference) and MDCNS at the gamma, tau of the official log whose test line
  #    is the published Table 4 cell (`results/official_selection.py`: LinRec 1.0 / 0.7, FMLP4Rec 1.5 / 0.7)
  #    Sports likewise (LinRec 3.0 / 0.7, FMLP4Rec 0.5 / 10), after Beauty.
  for b in "beauty linrec 1.0 0.7" "beauty fmlp4rec 1.5 0.7" "sports linrec 3.0 0.7" "sports fmlp4rec 0.5 10.0"; do
    set -- $b; for s in ${SEEDS:-42 43 44}; do
    echo "table4 $1 user $2 mdcns $s -- $table3 $mdcns_stop --gamma $3 --kd-temperature $4 --top-m 1"
    echo "table4 $1 user $2 rns $s -- $table3 $baseline_stop"
    local best; best=$(best_m dnsplus-sweep "$1" 14)
    [ -n "$best" ] && echo "table4 $1 user $2 dnsmn $s -- $table3 $baseline_stop --candidates 100 --top-m $best"
  done; done
  # 7. ngcf-ml100k: ICPNS and RNS on NGCF, ml-100k, the icpns-leak protocol without the leak: icpns.py's
  #    NGCF defaults (the ICPNS code's NGCF.yaml), RNS at its stage-1 schedule (lr 1e-3, batch 4096, <= 1000
  #    epochs, patience 100)
  for s in ${SEEDS:-1 2 3}; do
    echo "ngcf-ml100k ml-100k ratio ngcf rns $s -- --valid-metric ndcg@10 --ks 10,20 --lr 1e-3 --eval-every 1 --batch-size 4096 --epochs 1000 --patience 100"
    echo "ngcf-ml100k ml-100k ratio ngcf icpns $s -- --valid-metric ndcg@10 --ks 10,20 --lr 1e-3 --eval-every 1"
  done
  # 8. prefix-rows: Beauty's table3 RNS, seed 42, trained on one row per prefix as the MDCNS
  #    code does (--augmented-prefixes: ~4x the one-pass cost here) instead of every position in one pass: do the
  #    two give the same numbers? (They do on test; MDCNS's run, ~7 core-hours, was dropped: the table3 note.)
  #    LinRec's RNS too: table4's LinRec RNS misses the paper's N@10 by ~18% where its DNS+ and MDCNS do
  #    not (seed 42 is its lowest); one pass shifts the positions of a window's earlier prefixes (PositionalBackbone),
  #    one row per prefix does not.
  echo "prefix-rows beauty user sasrec rns 42 -- $table3 $baseline_stop --augmented-prefixes"
  echo "prefix-rows beauty user linrec rns 42 -- $table3 $baseline_stop --augmented-prefixes"
  # 9. ml-1m. ml1m-user: what a user types first, `python mdcns.py --dataset ml-1m --backbone
  #    sasrec` (the MDCNS protocol: s3rec block, BCE, user split), 8 epochs, a CPU budget (~100 s per MDCNS epoch),
  #    and RNS at the same settings and budget.
  #    The BPR collapse of ml1m-loo (2 seeds of 3, Kang's block), on its two collapsed seeds, one suspect at a time:
  #    ml1m-loo-s3rec changes only the block; ml1m-loo-excluded keeps Kang's block and removes each user's held-out
  #    items from the negatives (--exclude-held-out: under leave-one-out they are legal candidates).
  for s in ${SEEDS:-1 2 3}; do echo "ml1m-user ml-1m user sasrec mdcns $s -- --epochs 8"; done
  for s in ${SEEDS:-1 2 3}; do   # beside it, RNS at the same budget (baselines.py with mdcns.py's defaults)
    echo "ml1m-user ml-1m user sasrec rns $s -- --loss bce --examples-per-batch 1024 --valid-metric ndcg@20 --epochs 8"
  done
  local ml1m_loo="--max-len 200 --dim 50 --heads 1 --dropout 0.2 --batch-size 128 --loss bpr --valid-metric ndcg@10 --epochs 5 --eval-every 1"
  for s in ${SEEDS:-2 3}; do
    echo "ml1m-loo-s3rec ml-1m loo sasrec mdcns $s -- --sasrec-block s3rec $ml1m_loo"
    echo "ml1m-loo-excluded ml-1m loo sasrec mdcns $s -- --sasrec-block kang $ml1m_loo --exclude-held-out"
  done
  # 10. dns-warmup: table3's DNS(1, 100) rows after 30 epochs of uniform negatives, the official DNS+
  #    script's default --start_epoch (every released DNS+ log sets 0). Without it DNS(1, 100) stalls at the BCE of
  #    equal scores on LastFM, and so does the official code; the published row (.1209) is not reachable that way.
  for d in "lastfm user-prefixes" "beauty user" "sports user"; do
    set -- $d
    for s in ${SEEDS:-42 43 44}; do
      echo "dns-warmup $1 $2 sasrec dns $s -- $table3 $baseline_stop --candidates 100 --uniform-epochs 30"
    done
  done
  # 11. icpns-leak-ml1m: the same on ml-1m, LightGCN, RNS and ICPNS. The ml-1m here is SASRec's ml-1m.txt, which
  #    has no ratings: no rating >= 3 filter (the official ml-1m protocol has one).
  seeds="${SEEDS:-1}"
  icpns_leak_lines icpns-leak-ml1m ml-1m lightgcn -- rns icpns
  # 12. dnsplus-m10: DNS+ at M = 10, the M of the official DNS+ logs of Sports and Beauty
  #     (MDCNS_Code/EXP5/cankao_DNS+/<dataset>-SASRec_0_N100_M10.log, seed 42, whose test lines sit within 1-5% of
  #     the published DNS+ rows), at table3's protocol and seed 42: our DNS(M,N) beside the official code's own log
  #     Sports' FMLP4Rec too: at table4's M = 20 its DNS+ tests 15-16 % above Table 4's cell. Is M = 10 the paper's?
  for d in sports beauty; do
    echo "dnsplus-m10 $d user sasrec dnsmn 42 -- $table3 $baseline_stop --candidates 100 --top-m 10"
  done
  echo "dnsplus-m10 sports user fmlp4rec dnsmn 42 -- $table3 $baseline_stop --candidates 100 --top-m 10"
  # 13. mixgcf-bpr: Beauty's table3 MixGCF at BPR, the loss the released posmix script runs (it passes
  #     no --loss_type, and run_finetune_full.py defaults to BPR; it sets --start_epoch 0, as table3 runs), seed
  #     42: at BCE our MixGCF stalls at the loss of equal scores, 42% below Table 3. Does the loss explain it?
  echo "mixgcf-bpr beauty user sasrec mixgcf 42 -- ${table3/--loss bce/--loss bpr} $baseline_stop"
  # 14. mixgcfplus-bpr: Beauty's MixGCF+ at BPR. At BPR positive mixing only scales the margin,
  #     s_p - (α s_p + (1 - α) s_n) = (1 - α)(s_p - s_n), and the top M of the mixed scores are the top M of s_n:
  #     MixGCF+ is DNS(M, N) with the margin scaled by 1 - α (tests/test_samplers_extra.py). At BCE the mixed
  #     negative's term also pushes s_p down, and table3's MixGCF+ sweep falls as M grows (M = 100 lowest) where
  #     DNS+'s rises. The released posmix script trains at BPR and sweeps M (run_finetune.bash): the same sweep at
  #     BPR, then seed 42 to convergence at its M, beside table3's BCE row.
  for m in 1 2 3 4 5 6 7 8 9 10 15 20 25 30 35 40 45 50 100; do
    echo "mixgcfplus-bpr-sweep beauty user sasrec mixgcfmn-m$m 42 -- ${table3/--loss bce/--loss bpr} --epochs 20 --patience 20 --top-m $m"
  done
  local best_bpr; best_bpr=$(best_m mixgcfplus-bpr-sweep beauty 19)
  if [ -n "$best_bpr" ]; then
    echo "mixgcfplus-bpr beauty user sasrec mixgcfmn 42 -- ${table3/--loss bce/--loss bpr} $baseline_stop --top-m $best_bpr"
  fi
  # 15-17. Why MDCNS works, with a paired test behind every gain: every run of these grids writes test_rows.npz
  #    (each test row's recall and NDCG), so two rows trained at the same seed compare row by row
  #    (results/aggregate.py, "Paired comparisons"). Table 3's protocol and budget throughout.
  #    table3-paired: Table 3's MDCNS, DNS+ and RNS rows again, with per-row results (table3's own runs have none);
  #    the reference rows of the two tables below. Seed-major, so each seed completes a paired set.
  #    ablation (MDCNS Table 6, Beauty and Sports): w/o CD (--no-distillation) and w/o CD-DR (--no-distillation
  #    --no-divergence) at the published gamma, tau; "MDCNS" and "w/o CD-DR-MS" (= DNS+) are table3-paired's.
  #    Beside them DNS+ at M = 10, the M of the official DNS+ logs whose test lines the published DNS+ cells match
  #    (notes: sports-user-sasrec-table3.md), where table3-paired's DNS+ runs at the M its validation sweep chose.
  #    weak-peer (MDCNS Table 7): SASRec with a GRU4Rec peer (MDCNS_wts) beside table3-paired's Mamba4Rec peer, at
  #    the gamma, tau of the official log whose test line is the published cell (results/official_selection.py,
  #    MDCNS_Code/Exp6_WeaktoStrong: Beauty 3.0 / 2.0, Sports 0.3 / 2.0, LastFM 3.5 / 10).
  for d in "beauty 1.0 1.0 user 3.0 2.0" "sports 3.0 1.0 user 0.3 2.0" "lastfm 0.3 5.0 user-prefixes 3.5 10.0"; do
    set -- $d
    local mdcns_flags="$table3 $mdcns_stop --gamma $2 --kd-temperature $3 --top-m 1"
    local wts_flags="$table3 $mdcns_stop --gamma $5 --kd-temperature $6 --top-m 1"
    local best; best=$(best_m dnsplus-sweep "$1" 14)
    for s in ${SEEDS:-42 43 44}; do
      echo "table3-paired $1 $4 sasrec mdcns $s -- $mdcns_flags"
      [ -n "$best" ] && echo "table3-paired $1 $4 sasrec dnsmn $s -- $table3 $baseline_stop --candidates 100 --top-m $best"
      echo "table3-paired $1 $4 sasrec rns $s -- $table3 $baseline_stop"
      if [ "$1" != lastfm ]; then
        echo "ablation $1 $4 sasrec mdcns-no-cd $s -- $mdcns_flags --no-distillation"
        echo "ablation $1 $4 sasrec mdcns-no-cd-dr $s -- $mdcns_flags --no-distillation --no-divergence"
        echo "ablation $1 $4 sasrec dnsmn-m10 $s -- $table3 $baseline_stop --candidates 100 --top-m 10"
      fi
      echo "weak-peer $1 $4 sasrec mdcns-gru4rec-peer $s -- $wts_flags --peer gru4rec"
    done
  done
  # 18. table5 (MDCNS Table 5, Beauty, BPR): SASRec, GRU4Rec and Mamba4Rec as the self model (Mamba4Rec's peer is
  #    SASRec) x RNS, DNS+ and MDCNS at table3's protocol and budget with --loss bpr. DNS+'s M is chosen at BPR per
  #    backbone as dnsplus-sweep chose it at BCE (dnsplus-bpr-<backbone>-sweep: seed 42, 20 epochs per M); MDCNS at
  #    the gamma, tau of the official log whose test line is the published cell (MDCNS_Code/EXP2_BPR: SASRec
  #    1.0 / 1.0, GRU4Rec 1.5 / 10, Mamba4Rec 3.5 / 0.7). Every backbone as the MDCNS code and its Baselines build
  #    it, 2 layers and dropout 0.5 (mdcns.py's defaults); baselines.py's GRU4Rec defaults are RecBole's (1 layer,
  #    dropout 0.2), so GRU4Rec's lines say so.
  local bpr="${table3/--loss bce/--loss bpr}"
  for b in "sasrec 1.0 1.0" "gru4rec 1.5 10.0 --layers 2 --dropout 0.5" "mamba4rec 3.5 0.7"; do
    set -- $b
    local flags="$bpr ${*:4}"
    local best; best=$(best_m "dnsplus-bpr-$1-sweep" beauty 14)
    for s in ${SEEDS:-42 43 44}; do
      echo "table5 beauty user $1 mdcns $s -- $flags $mdcns_stop --gamma $2 --kd-temperature $3 --top-m 1"
      [ -n "$best" ] && echo "table5 beauty user $1 dnsmn $s -- $flags $baseline_stop --candidates 100 --top-m $best"
      echo "table5 beauty user $1 rns $s -- $flags $baseline_stop"
    done
    for m in 1 2 3 4 5 10 20 30 40 50 60 70 80 90; do
      echo "dnsplus-bpr-$1-sweep beauty user $1 dnsmn-m$m 42 -- $flags --epochs 20 --patience 20 --candidates 100 --top-m $m"
    done
  done
}

# icpns_leak_lines GRID DATASET BACKBONE... [-- METHOD...]: the lines of grids 5 and 11 (methods: rns pns dns icpns)
icpns_leak_lines() {
  local grid="$1" dataset="$2" backbones=() methods=(rns pns dns icpns) b s m leak flags
  shift 2
  while [ $# -gt 0 ] && [ "$1" != -- ]; do backbones+=("$1"); shift; done
  if [ $# -gt 0 ]; then shift; methods=("$@"); fi
  for b in "${backbones[@]}"; do for s in $seeds; do for m in "${methods[@]}"; do
    for leak in "" --exclude-held-out; do
      if [ "$m" = icpns ]; then   # icpns.py's defaults; the leak run reuses the clean run's pre-training
        flags="${leak:+--pretrained $RUNS/$grid/$dataset-ratio-$b-icpns-s$s/pretrained.pt}"
      elif [ "$b" = mf ]; then
        flags="--batch-size 40960 --epochs 1000 --patience 20"
      else
        flags="--batch-size 4096 --epochs 1000 --patience 100"
      fi
      echo "$grid $dataset ratio $b $m $s -- --valid-metric ndcg@10 --ks 10,20 --lr 1e-3 --eval-every 1 $flags $leak"
    done
  done; done; done
}

# best_m SWEEP DATASET SIZE: the M of the SIZE finished runs of sweep grid SWEEP on DATASET with the best
# validation NDCG@20 (empty until all of them are done, so the table3 runs that use it wait for the sweep)
best_m() {
  $PYTHON results/aggregate.py --best-m "$RUNS/$1" --dataset "$2" --sweep-size "$3" 2>/dev/null || true
}

# flags only some methods take are dropped for the others (--pretrain-* is ICPNS's)
filter_flags() {
  local method="$1"; shift
  local out=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --pretrain-epochs|--pretrain-patience) [ "$method" = icpns ] && out+=("$1" "$2"); shift 2; continue ;;
    esac
    out+=("$1"); shift
  done
  echo "${out[@]}"
}

lines=$(grid_lines)
# a --grid, --dataset or --method that no grid line has is a typo: say so before any run starts
for filter in "grid $GRID 1" "dataset $DATASET 2" "method $METHOD 5"; do
  set -- $filter
  [ "$2" = all ] || [ "$QUICK" = 1 ] || awk -v v="$2" -v c="$3" '$c == v { found = 1 } END { exit !found }' <<< "$lines" ||
    { echo "error: no grid line has $1 $2 (see --help for the grids; --dry-run lists the runs)" >&2; exit 2; }
done

todo=0; done_=0
while read -r grid dataset split backbone method seed _ extra; do
  [ "$GRID" = all ] || [ "$GRID" = "$grid" ] || [ "$QUICK" = 1 ] || continue
  [ "$DATASET" = all ] || [ "$DATASET" = "$dataset" ] || [ "$QUICK" = 1 ] || continue
  [ "$METHOD" = all ] || [ "$METHOD" = "$method" ] || [ "$QUICK" = 1 ] || continue
  case " $extra " in *" --exclude-held-out "*) variant=-leak ;; *) variant="" ;; esac
  dir="$RUNS/$grid/$dataset-$split-$backbone-$method$variant-s$seed"
  cmd="$PYTHON $(method_command "$method") --dataset $dataset --data-dir $DATA_DIR --split $split --backbone $backbone --seed $seed --quiet --out-dir $dir $(filter_flags "$method" $extra)"
  if [ -f "$dir/results.json" ]; then
    done_=$((done_ + 1)); [ "$DRY" = 1 ] && echo "done  $cmd"; continue
  fi
  todo=$((todo + 1))
  state=todo
  if [ -f "$dir/checkpoint.pt" ]; then state=resume; cmd="$cmd --resume"; fi   # stopped mid-way: continue it
  if [ "$DRY" = 1 ]; then echo "$state  $cmd"; continue; fi
  mkdir -p "$dir"
  # a lock per run: several ./run_all.sh may share the grid (one per core); each skips the runs another holds
  exec {lock}> "$dir/.lock"
  if ! flock -n "$lock"; then
    echo "[$(date +%H:%M:%S)] skip (another run_all.sh runs it): $dir"; exec {lock}>&-; continue
  fi
  echo "[$(date +%H:%M:%S)] $cmd"
  # in the background, so that the traps above run at once; the log of a resumed run continues its own
  $cmd >> "$dir/log.txt" 2>&1 &
  child=$!
  if ! wait "$child"; then
    echo "  failed: see $dir/log.txt" >&2; tail -n 2 "$dir/log.txt" >&2
  fi
  child=""
  exec {lock}>&-
done <<< "$lines"

echo "$done_ runs already done, $todo to run or resume$([ "$DRY" = 1 ] && echo ' (dry run)')"
if [ "$DRY" = 0 ]; then
  $PYTHON results/aggregate.py --runs "$RUNS" --out "$([ "$QUICK" = 1 ] && echo "$RUNS" || echo results)"
fi

#!/usr/bin/env bash
# The project's checks on a GPU machine, in one run of about six minutes on one H200:
#   1. benchmarks/bench_train.py on the GPU: the demo and the paper configuration in float32,
#      bf16, bf16 + channels-last, and all three with torch.compile (run alone on the GPU);
#   2. the paper's model and recipe on a small mini-CLEVR (config/paper-mini.yaml): data stages,
#      training, evaluation;
#   3. the capacity study (studies/compare_attribute/capacity.py) on the Compare Attribute
#      probe, one process per lever, far more epochs than a CPU session affords.
# 2 and 3 share the GPU (their samples/s are not benchmarks; 1's are). Needs the project's
# dependencies but not Snakemake: the stages are called as the Snakefile calls them. Everything
# lands in OUT: logs, tables, JSON, the paper-mini results; the data and checkpoints in DATA
# (default OUT/data), never in the project's data/.
#   bash benchmarks/gpu_checks.sh OUT
# Sizes can be lowered for a dry run on a CPU: PROBE_EPOCHS, PROBE_PARAMS, PAPER_PARAMS, LEVERS,
# BENCH_ARGS.
set -uo pipefail
OUT=$(realpath -m "${1:?usage: gpu_checks.sh OUT}")
PROBE_EPOCHS=${PROBE_EPOCHS:-30}
PROBE_PARAMS=${PROBE_PARAMS:-config/probe-compare-attribute-3-objects.yaml}
PAPER_PARAMS=${PAPER_PARAMS:-config/paper-mini.yaml}
BENCH_ARGS=${BENCH_ARGS:-"--grid short"}
LEVERS=${LEVERS:-"profile's model|16x16 grid (2 stem layers; paper 14x14)|the paper's widths (GRU 4096, 128 maps)"}
DATA=$(realpath -m "${DATA:-$OUT/data}")
export FILMCLEVR_LOG=${FILMCLEVR_LOG:-INFO}
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
CORES=$(nproc)
started=$SECONDS
stamp() { echo "[$((SECONDS - started)) s] $*" | tee -a "$OUT/timeline.txt"; }

data() {  # PARAMS ROOT WORKERS: the four data stages, as workflow/rules/data.smk runs them
  python -m stages.get_data --params "$1" --out "$2/clevr" --workers "$3" &&
    python -m stages.resize_images --params "$1" --clevr "$2/clevr" --out "$2/resized" \
      --workers "$3" &&
    python -m stages.tokenize_questions --params "$1" --clevr "$2/clevr" --out "$2/tokens" &&
    python -m stages.write_shards --params "$1" --resized "$2/resized" --tokens "$2/tokens" \
      --out "$2/shards"
}

{ nvidia-smi; python -c "import torch; print('torch', torch.__version__)"; } >"$OUT/machine.txt" 2>&1
stamp "start on $CORES cores"

# 1 alone on the GPU while the data stages use the CPU (two cores left to the benchmark).
python benchmarks/bench_train.py $BENCH_ARGS >"$OUT/bench_train.txt" 2>&1 &
bench=$!
data_workers=$((CORES > 4 ? CORES - 2 : 1))
rm -rf "$DATA/probe" "$DATA/paper-mini"
(data "$PROBE_PARAMS" "$DATA/probe" $data_workers && stamp "probe data done") \
  >"$OUT/data-probe.log" 2>&1
(data "$PAPER_PARAMS" "$DATA/paper-mini" $data_workers && stamp "paper-mini data done") \
  >"$OUT/data-paper-mini.log" 2>&1
wait $bench
stamp "bench_train exit $?"

# 3: one process per lever, on the probe's data.
pids=()
IFS='|' read -r -a levers <<<"$LEVERS"
for i in "${!levers[@]}"; do
  python -m studies.compare_attribute.capacity --params "$PROBE_PARAMS" --only "${levers[$i]}" \
    --data "$DATA/probe" --json "$OUT/probe-$i.json" --train "max_epochs=$PROBE_EPOCHS" \
    batch_size=256 bf16=true channels_last=true num_workers=2 >"$OUT/probe-$i.log" 2>&1 &
  pids+=($!)
done

# 2: the paper profile's training and evaluation, as workflow/rules/model.smk runs them.
P=$DATA/paper-mini
R=$OUT/paper-mini
mkdir -p "$R"
{
  python -m stages.train_model --params "$PAPER_PARAMS" --shards "$P/shards" \
    --vocab "$P/tokens/vocab.json" --out "$P/film.pt" --last "$P/last.pt" --log-dir "$R/train" \
    --curves "$R/curves.png" &&
    python -m stages.evaluate_model --params "$PAPER_PARAMS" --checkpoint "$P/film.pt" \
      --sidecar "$P/film.json" --shards "$P/shards" --tokens "$P/tokens" \
      --metrics "$R/metrics.json" --table-md "$R/table.md" --table-csv "$R/table.csv" \
      --table-html "$R/table.html" --figure "$R/accuracy.png" --figure-csv "$R/accuracy.csv" \
      --curve-csv "$R/learning_curve.csv" --curve-figure "$R/learning_curve_vs_paper.png" \
      --predictions "$P/predictions"
} >"$R/train-evaluate.log" 2>&1
stamp "paper-mini exit $?"
cp "$P/film.json" "$R/" 2>/dev/null

for pid in "${pids[@]}"; do
  wait "$pid"
  stamp "probe lever (pid $pid) exit $?"
done
python -m studies.compare_attribute.capacity --params "$PROBE_PARAMS" --show "$OUT"/probe-*.json \
  >"$OUT/probe-table.txt" 2>&1
stamp "done"

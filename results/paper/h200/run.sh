#!/usr/bin/env bash
# Part of the paper campaign on a lent GPU machine (see README.md beside this file).
#
# Run from the repository root, with $OUT a folder for what comes back:
#   bash results/paper/h200/run.sh [SECONDS [CAMPAIGN [CHECK]]]
# Trains CAMPAIGN (default campaign.toml here: runs of `gradpath campaign paper`, same run keys)
# and CHECK (default check.toml: runs the CPU store already holds, again on the GPU; "none" for
# none) side by side until SECONDS (default 470) have passed,
# then stops both and packs every run that finished (complete or diverged; never a run cut off
# part-way) into $OUT/runs.tgz.part-* (split: one file that comes back holds at most 16 MiB).
# Needs: python3 with jax (CUDA), numpy, scipy, pandas, pyarrow, tqdm, matplotlib, seaborn, and
# for PyTorch runs torch (CUDA, with triton for torch.compile);
# .whl/ with the array-api-compat wheel, and .gpucache/ with the cavity reference (n = 256)
# from `gradpath` on another machine, so the GPU machine does not solve it again.
set -u
here=results/paper/h200
deadline=${1:-470}
campaign=${2:-$here/campaign.toml}
check_file=${3:-$here/check.toml}
started=$(date +%s)
out=${OUT:?set OUT to the folder for results}
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH="$PWD:/tmp/site" PYTHONUNBUFFERED=1 GRADPATH_CACHE="$PWD/.gpucache"
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # several processes share the GPU: each takes what it needs

{
    date -u +"started %Y-%m-%dT%H:%M:%SZ"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi"
    echo "cpus: $(nproc)"
    python3 -c "import jax, numpy, sys; print('python', sys.version.split()[0], 'jax', jax.__version__, 'numpy', numpy.__version__, 'devices', jax.devices())"
    python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())" || echo "no torch"
} > "$out/machine.txt" 2>&1
cat "$out/machine.txt"
(nvidia-smi dmon -s u -d 10 > "$out/dmon.txt" 2>&1 &)

# each campaign in its own process group, so that stopping it stops its workers too
setsid python3 -m suite campaign "$campaign" --store /tmp/store --jobs "${JOBS:-6}" --lanes 10 \
    > "$out/campaign.log" 2>&1 &
main=$!
check=$main
if [[ $check_file != none ]]; then
    setsid python3 -m suite campaign "$check_file" --store /tmp/check --jobs 1 --lanes 10 > "$out/check.log" 2>&1 &
    check=$!
fi
while (( $(date +%s) - started < deadline )) && { kill -0 $main 2>/dev/null || kill -0 $check 2>/dev/null; }; do
    sleep 5
done
for pid in $main $check; do kill -TERM -- -$pid 2>/dev/null; done
sleep 5
for pid in $main $check; do kill -KILL -- -$pid 2>/dev/null; done
pkill -f "nvidia-smi dmon"
echo "stopped after $(( $(date +%s) - started )) s" | tee -a "$out/machine.txt"

# finished runs only: the summary is the last file a run writes, atomically
python3 - > /tmp/finished.txt <<'EOF'
import json, pathlib
for store in ("store", "check"):
    for summary in sorted(pathlib.Path("/tmp", store).glob("*/summary.json")):
        if json.loads(summary.read_text()).get("status") in ("complete", "diverged"):
            print(f"{store}/{summary.parent.name}")
EOF
echo "finished runs: $(wc -l < /tmp/finished.txt)" | tee -a "$out/machine.txt"
tar -C /tmp --exclude=checkpoint.npz -czf - -T /tmp/finished.txt | split -b 15m - "$out/runs.tgz.part-"
ls -l "$out"

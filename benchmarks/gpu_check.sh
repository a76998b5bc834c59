#!/usr/bin/env bash
# Every GPU measurement visfeat claims, in one command (planned for at most 8 minutes on one H100):
#   bash benchmarks/gpu_check.sh            # results under $OUT (the device tool's folder) or ./gpu_check
# 1. render throughput at batches 8..512, fp32 and bf16, against lucent and the floor (gallery_throughput.py);
# 2. the demo gallery built with --device cuda (wall time, units rendered);
# 3. the heavy preset on 16 blocks.4 channels (seconds per unit);
# 4. the quality benchmark at two budgets, visfeat's presets against lucent (quality_budget.py).
# Each part has its own time limit, so one slow part cannot eat the others; the table at the end says which
# parts ran. Needs the project installed (pip install -e ".[dev]") and a CUDA device.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu_check}"
mkdir -p "$OUT"
export RAY_USAGE_STATS_ENABLED=0
python - <<'EOF' || { echo "gpu_check: no CUDA device visible to torch; run it on a GPU machine" >&2; exit 2; }
import torch
assert torch.cuda.is_available()
print("device:", torch.cuda.get_device_name(0), "| torch", torch.__version__)
EOF
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"

part() {  # part NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.log, record wall time and status
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name $rc $((SECONDS - start))" >>"$OUT/parts.txt"
  tail -n 25 "$OUT/$name.log"
}
: >"$OUT/parts.txt"
part throughput 120 python benchmarks/gallery_throughput.py --device cuda --json "$OUT/throughput.json"
part demo 150 visfeat gallery build gallery/demo.toml -o "$OUT/demo_site" --device cuda --no-progress
part heavy 90 python -c "
import json, visfeat as vf
m = vf.load_model('efficientnet_lite0', device='cuda')
r = vf.render(m, [f'blocks.4:{c}' for c in range(0, 112, 7)], preset='heavy', progress=False)
print(json.dumps({'units': len(r.names), 'seconds': r.seconds, 'settings': r.settings}))
"
part quality 120 python benchmarks/quality_budget.py --device cuda --budgets 64 256 --recipes draft default lucent \
  --json "$OUT/quality.json" --figure "$OUT/quality.png"

python - "$OUT" <<'EOF'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
print("\n== gpu_check:", (out / "gpu.txt").read_text().strip())
print(f"{'part':<12}{'exit':>6}{'seconds':>9}  result")
for line in (out / "parts.txt").read_text().split("\n"):
    if not line:
        continue
    name, rc, sec = line.split()
    note = {"0": "ok", "124": "TIMED OUT"}.get(rc, "FAILED (see " + name + ".log)")
    if name == "heavy" and rc == "0":
        h = json.loads((out / "heavy.log").read_text().strip().split("\n")[-1])
        note += f": {h['units']} units, {h['seconds'] / h['units']:.2f} s/unit ({h['settings']['steps']} steps x {h['settings']['views']} views)"
    if name == "demo" and rc == "0":
        note += ": " + " ".join((out / "demo.log").read_text().split("\n")[-3:]).strip()[:120]
    print(f"{name:<12}{rc:>6}{sec:>9}  {note}")
EOF

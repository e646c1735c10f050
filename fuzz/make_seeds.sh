#!/usr/bin/env bash
# Writes the seed inputs of the model fuzz targets into fuzz/corpus (generated here, nothing
# downloaded): small Darknet networks as `cfg NUL weights` (darknet_cfg), the ONNX files
# `its model import darknet` writes for them (onnx_model), and PATCH /api/v1/scheduler bodies
# (scheduler_tuning_json). Needs the `its` binary: cargo build -p its-node.
#   fuzz/make_seeds.sh [ITS_BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
its="${1:-target/debug/its}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p fuzz/corpus/darknet_cfg fuzz/corpus/onnx_model fuzz/corpus/scheduler_tuning_json
python3 - "$work" <<'PY'
import random, struct, sys, os
work = sys.argv[1]
random.seed(12)
head = "[net]\nwidth={w}\nheight={h}\nchannels=3\n\n"
conv = "[convolutional]\n{bn}filters={f}\nsize={k}\nstride={s}\npad=1\nactivation={a}\n\n"
yolo = "[yolo]\nmask=0,1\nanchors=10,14, 23,27, 37,58\nclasses=2\nnum=3\n\n"
nets = {
    # conv, maxpool, 1x1 head, yolo
    "small": head.format(w=32, h=32) + conv.format(bn="batch_normalize=1\n", f=4, k=3, s=2, a="leaky")
        + "[maxpool]\nsize=2\nstride=1\n\n" + conv.format(bn="", f=14, k=1, s=1, a="linear") + yolo,
    # route with groups, shortcut, upsample, a second route of two layers
    "routes": head.format(w=32, h=32) + conv.format(bn="batch_normalize=1\n", f=4, k=3, s=1, a="leaky")
        + "[route]\nlayers=-1\ngroups=2\ngroup_id=1\n\n"
        + conv.format(bn="batch_normalize=1\n", f=4, k=3, s=1, a="mish")
        + "[shortcut]\nfrom=-3\nactivation=linear\n\n"
        + "[maxpool]\nsize=2\nstride=2\n\n[upsample]\nstride=2\n\n[route]\nlayers=-1,-3\n\n"
        + conv.format(bn="", f=14, k=1, s=1, a="linear") + yolo,
}
for name, cfg in nets.items():
    open(os.path.join(work, name + ".cfg"), "w").write(cfg)
    open(os.path.join(work, name + ".names"), "w").write("car\nbus\n")
PY
for n in small routes; do
    # the weights: header (format 0.2, 20 bytes) and exactly the floats the cfg asks for
    floats=$(python3 - "$work/$n.cfg" <<'PY'
import sys, re
text = open(sys.argv[1]).read()
secs = [s for s in re.split(r"\n(?=\[)", text.strip())]
chans, total, outs = 3, 0, []
for s in secs[1:]:
    kind = s.split("]")[0][1:]
    kv = dict(l.split("=", 1) for l in s.splitlines()[1:] if "=" in l)
    if kind == "convolutional":
        f, k, bn = int(kv["filters"]), int(kv["size"]), "batch_normalize" in kv
        total += f + (3 * f if bn else 0) + f * chans * k * k
        chans = f
    elif kind == "route":
        layers = [int(x) for x in kv["layers"].split(",")]
        i = len(outs)
        c = sum(outs[l if l >= 0 else i + l] for l in layers)
        chans = c // int(kv.get("groups", "1"))
    outs.append(chans)
print(total)
PY
)
    python3 - "$work/$n.weights" "$floats" <<'PY'
import random, struct, sys
random.seed(7)
n = int(sys.argv[2])
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<iiiQ", 0, 2, 0, 0))
    # batch-norm variances must stay positive: every value in (0.05, 0.5)
    f.write(struct.pack("<%df" % n, *[random.uniform(0.05, 0.5) for _ in range(n)]))
PY
    "$its" model import darknet "$work/$n.cfg" "$work/$n.weights" "$work/$n.names" \
        --out "$work/$n" >/dev/null
    { cat "$work/$n.cfg"; printf '\0'; cat "$work/$n.weights"; } >"fuzz/corpus/darknet_cfg/seed-$n"
    cp "$work/$n/model.onnx" "fuzz/corpus/onnx_model/seed-$n.onnx"
done
t=fuzz/corpus/scheduler_tuning_json
printf '%s' '{"batch_sizes":[1,4,8,16,32]}' >"$t/seed-batch-sizes"
printf '%s' '{"deadlines_ms":[50,100,250,1000],"late_policy":"deliver"}' >"$t/seed-deadlines"
printf '%s' '{"min_batch_timeout_ms":2,"max_batch_timeout_ms":20,"shed_miss_ratio":0.25}' >"$t/seed-timeouts"
printf '%s' '{"batch_sizes":[8,4],"late_policy":"drop","unknown":1}' >"$t/seed-invalid"
echo "seeds written: $(ls fuzz/corpus/darknet_cfg fuzz/corpus/onnx_model $t | grep -c seed-)"

#!/usr/bin/env bash
# Fingerprint the runtime's outputs, to show that a refactor changes nothing:
# every eval photo with each method (fixed seed), the bundled sample, two clips and a
# live recording, through the CLI. Writes OUTDIR/SHA256SUMS (files, decoded frames,
# detections JSON without paths); compare two runs with `diff A/SHA256SUMS B/SHA256SUMS`.
#   tools/fingerprint.sh OUTDIR [EVAL_DIR]
set -u
out=$(realpath -m "$1"); eval_dir=${2:-../shared/data/eval}
A=${ANONYFACE:-.venv/bin/anonyface}; PY=${PYTHON:-.venv/bin/python}
mkdir -p "$out"
for m in synth blur pixelate solid; do
  $A "$eval_dir"/*.jpg -o "$out/photos-$m/" -m $m --seed 0 -q --json "$out/photos-$m.json" 2>>"$out/err.log"
done
$A src/anonyface/samples/group.jpg -o "$out/group-synth.png" --seed 0 -q
$A "$eval_dir/interview.mp4" -o "$out/interview-synth.mp4" --end 4 --seed 0 -q 2>>"$out/err.log"
$A "$eval_dir/street.mp4" -o "$out/street-synth.mp4" --end 1.2 --seed 0 -q 2>>"$out/err.log"
$A "$eval_dir/interview.mp4" -o "$out/interview-blur.mp4" --end 2 -m blur -q 2>>"$out/err.log"
$A live "$eval_dir/interview.mp4" --no-preview -o "$out/live-blur.mp4" --max-frames 40 -m blur -q 2>>"$out/err.log"
OUT="$out" $PY - <<'PY' > "$out/SHA256SUMS.tmp"
import av, glob, hashlib, json, os
os.chdir(os.environ["OUT"])
for p in sorted(glob.glob("**/*.*", recursive=True)):
    if p.startswith("SHA256SUMS") or p.endswith(".log"):
        continue
    data = open(p, "rb").read()
    if p.endswith(".json"):  # detections, without the output paths
        doc = json.loads(data)
        for f in doc["files"]:
            f["output"] = os.path.basename(f["output"] or "")
        data = json.dumps(doc, sort_keys=True).encode()
    print(hashlib.sha256(data).hexdigest(), p)
    if p.endswith(".mp4"):
        h = hashlib.sha256()
        with av.open(p) as c:
            for fr in c.decode(video=0):
                h.update(fr.to_ndarray(format="rgb24").tobytes()); h.update(str(fr.pts).encode())
        print(h.hexdigest(), p + ":frames")
PY
mv "$out/SHA256SUMS.tmp" "$out/SHA256SUMS"
echo "$(wc -l < "$out/SHA256SUMS") fingerprints in $out/SHA256SUMS"

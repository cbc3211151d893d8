"""Video: coverage per frame, re-identification, flicker and identity stability per track.

Each method runs through the product's own video path
(`anonyface.video.process_video`, default options), whose `on_frame` hook hands
over every original frame, its covered version and the tracked faces:

* coverage per frame: every `stride`-th frame, the judges look at the original
  (once per video, shared by all methods); a face is uncovered by the rule of
  `metrics.py`. Reported: faces judged, uncovered faces, and frames with at
  least one uncovered face;
* re-identification on those frames (faces ≥ 60 px), as for photos;
* flicker: `flicker.FlickerMeter` over every frame, inside the tracked face
  boxes: the output's frame-to-frame change over the original's (1 = as
  steady as the real face; > 1 the cover adds flicker);
* identity stability per track: `flicker.identity_stability` on dlib
  embeddings of the output's face crops every `id_stride`-th frame (for blur,
  pixelate and solid there is no identity: read it as a baseline);
* seam score and lighting (`scene.py`) of every tracked face ≥ `MIN_SCENE_PX`
  on the judged frames, at its tracked box: the covered frame against the
  original frame (the real faces of the same frames give the lighting
  tolerance);
* speed: frames/s of the whole pipeline (decode, detect, track, cover,
  encode), with the time spent inside the measuring hook taken out.

deface runs its own command line on each video; its output is decoded and
judged on the same frames (coverage and re-identification only: it reports no
tracks).
"""

from __future__ import annotations

import subprocess
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..geometry import crop_face
from . import metrics as M
from .identity import MIN_REID_PX, SAME_PERSON
from .scene import MIN_SCENE_PX, SceneFace, summarize_lighting, summarize_seam


def _judge_frame(judges, rgb: np.ndarray, embedder) -> list[dict]:
    refs = M.cluster({j.name: j(rgb) for j in judges})
    out = []
    for ref in refs:
        info = {"ref": ref}
        main = ref.main
        if main.width >= MIN_REID_PX:
            shape = embedder.align(rgb, main.box, main.detector)
            info["shape"], info["emb"] = shape, embedder.embed(rgb, shape)
        out.append(info)
    return out


def _score_frame(orig: np.ndarray, out: np.ndarray, refs: list[dict], embedder) -> dict:
    unc, dists = 0, []
    for r in refs:
        unc += any(M.face_unchanged(orig, out, d.box)[2] for d in r["ref"].members.values())
        if "emb" in r:
            dists.append(float(np.linalg.norm(r["emb"] - embedder.embed(out, r["shape"]))))
    return {"faces": len(refs), "uncovered": unc, "reid": dists}


def _crop_embed(embedder):
    def embed(crop: np.ndarray) -> np.ndarray:
        n = crop.shape[0]
        s = n / 1.6 / 2
        box = (n / 2 - s, n / 2 - s, n / 2 + s, n / 2 + s)
        return embedder.embed(crop, embedder.align(crop, box, "ours"))
    return embed


def _summ(frames: list[dict]) -> dict:
    faces = sum(f["faces"] for f in frames)
    unc = sum(f["uncovered"] for f in frames)
    d = [x for f in frames for x in f["reid"]]
    return {
        "frames_judged": len(frames), "faces": faces, "uncovered": unc,
        "frames_with_uncovered": sum(f["uncovered"] > 0 for f in frames),
        "reid_faces": len(d), "reid_pct": round(100 * sum(x < SAME_PERSON for x in d) / len(d), 2) if d else None,
    }


def evaluate_videos(videos: list[Path], methods: dict, judges, embedder, work: Path, stride: int = 10,
                    id_stride: int = 5, deface_cmd: list[str] | None = None, log=print) -> dict:
    import av

    from .flicker import FlickerMeter, identity_stability
    from ..video import VideoOptions, process_video

    results: dict = {}
    for vid in videos:
        judged: dict[int, list[dict]] = {}
        per_method: dict = {}
        for name, anon in methods.items():
            t0 = time.perf_counter()
            meter = FlickerMeter()
            frames: list[dict] = []
            crops: dict[int, list[np.ndarray]] = defaultdict(list)
            scene: list[dict] = []
            state = {"i": 0, "hook": 0.0}

            def on_frame(orig, covered, tracked, t, _frames=frames, _crops=crops, _meter=meter, _state=state,
                         _scene=scene):
                h0 = time.perf_counter()
                i = _state["i"]
                _meter.add(orig, covered, [tf.face.box for tf in tracked])
                if i % stride == 0:
                    if i not in judged:
                        judged[i] = _judge_frame(judges, orig, embedder)
                    _frames.append(_score_frame(orig, covered, judged[i], embedder) | {"frame": i})
                    for tf in tracked:
                        if tf.face.width >= MIN_SCENE_PX:
                            _scene.append(SceneFace(orig, tf.face.box).measure(covered))
                if i % id_stride == 0:
                    for tf in tracked:
                        if tf.face.width >= M.MIN_CROP_PX:
                            _crops[tf.track_id].append(crop_face(covered, tf.face.box, 150, 1.6).pixels)
                _state["i"] = i + 1
                _state["hook"] += time.perf_counter() - h0

            dst = work / f"{vid.stem}-{name}.mp4"
            try:
                stats = process_video(anon, vid, dst, VideoOptions(progress=False), on_frame=on_frame)
            except Exception as e:  # the video pipeline is young: report, do not stop the photos
                per_method[name] = {"error": f"{type(e).__name__}: {e}"}
                log(f"video {vid.name} / {name}: {type(e).__name__}: {e}")
                continue
            finally:
                if dst.exists():
                    dst.unlink()
            net = max(1e-9, stats.seconds - state["hook"])
            stab = identity_stability({k: v for k, v in crops.items() if len(v) > 1}, _crop_embed(embedder)) if crops else {}
            per_method[name] = {
                **_summ(frames), "frames": stats.frames, "tracks": stats.tracks,
                "fps": round(stats.frames / net, 2), "fps_with_measuring": round(stats.fps, 2),
                "flicker": meter.result(), "identity_stability": stab,
                "seam": summarize_seam([r["seam"] for r in scene if "seam" in r]),
                "lighting": summarize_lighting([r["lighting"] for r in scene if "lighting" in r]),
                "wall_s": round(time.perf_counter() - t0, 1),
            }
            log(f"video {vid.name} / {name}: {per_method[name]['frames']} frames, {per_method[name]['uncovered']} uncovered")
        if deface_cmd is not None and judged:
            dst = work / f"{vid.stem}-deface{vid.suffix}"
            t = time.perf_counter()
            rc = subprocess.run([*deface_cmd, str(vid), "-o", str(dst)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL).returncode
            wall = time.perf_counter() - t
            if rc == 0 and dst.exists():
                with av.open(str(vid)) as a:
                    n_in = sum(1 for _ in a.decode(video=0))
                with av.open(str(dst)) as b:
                    n = sum(1 for _ in b.decode(video=0))
                entry = {"frames": n, "fps": round(n_in / wall, 2), "wall_s": round(wall, 1)}
                if n != n_in:
                    # deface re-times the video (its writer uses a constant rate): frames do not pair up.
                    entry["note"] = f"output has {n} frames, input {n_in}: not compared frame by frame"
                else:
                    frames = []
                    with av.open(str(vid)) as a, av.open(str(dst)) as b:
                        for i, (fa, fb) in enumerate(zip(a.decode(video=0), b.decode(video=0))):
                            if i in judged:
                                oa, ob = fa.to_ndarray(format="rgb24"), fb.to_ndarray(format="rgb24")
                                h, w = oa.shape[:2]
                                if ob.shape[0] >= h and ob.shape[1] >= w:  # encoders may pad to 16 px
                                    frames.append(_score_frame(oa, ob[:h, :w], judged[i], embedder) | {"frame": i})
                    entry.update(_summ(frames))
                per_method["deface"] = entry
                dst.unlink()
            else:
                per_method["deface"] = {"error": f"deface exited with {rc}"}
        results[vid.name] = per_method
    return results

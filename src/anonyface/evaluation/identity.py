"""Re-identification: dlib's ResNet face embedding (128-d), the privacy judge.

The original face is aligned once with dlib's 5-point shape predictor; the
output is read at exactly the same place with the same alignment (the best an
attacker who knows where the face was can do), and the two embeddings are
compared. dlib's usual threshold: same person below 0.6 (docs/MODELS.md: same
person 0.33–0.43, different people ≥ 0.63).
"""

from __future__ import annotations

import numpy as np

#: Euclidean distance below which two embeddings are the same person.
SAME_PERSON = 0.6
#: Faces smaller than this (box width, pixels) are not judged for re-identification.
MIN_REID_PX = 60


class FaceEmbedder:
    def __init__(self) -> None:
        import dlib
        import face_recognition_models as frm

        self._dlib = dlib
        self._shape = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
        self._net = dlib.face_recognition_model_v1(frm.face_recognition_model_location())

    @staticmethod
    def dlib_box(box, detector: str) -> tuple[int, int, int, int]:
        """dlib's detectors give a square from brows to upper lip; CenterFace / RetinaFace
        give brows to chin. Map the latter to a square of its width about its centre."""
        x1, y1, x2, y2 = box
        if detector in ("hog", "mmod"):
            return int(round(x1)), int(round(y1)), int(round(x2)), int(round(y2))
        cx, cy, s = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2
        return int(round(cx - s)), int(round(cy - s)), int(round(cx + s)), int(round(cy + s))

    def align(self, rgb: np.ndarray, box, detector: str):
        x1, y1, x2, y2 = self.dlib_box(box, detector)
        return self._shape(np.ascontiguousarray(rgb), self._dlib.rectangle(x1, y1, x2, y2))

    def embed(self, rgb: np.ndarray, shape) -> np.ndarray:
        chip = self._dlib.get_face_chip(np.ascontiguousarray(rgb), shape, size=150, padding=0.25)
        return np.asarray(self._net.compute_face_descriptor(chip), np.float32)

    def embed_pair(self, original: np.ndarray, output: np.ndarray, box, detector: str) -> float:
        """Embedding distance between the original face and the output at the same place."""
        shape = self.align(original, box, detector)
        return float(np.linalg.norm(self.embed(original, shape) - self.embed(output, shape)))

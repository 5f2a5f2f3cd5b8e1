"""Scores texts with the peers, inside their own virtual environment (run by ``benchmarks/peers.py``, not imported).

Reads ``{set: [texts]}`` (JSON) from argv[1], writes ``{system: {set: {"hate", "flag", "hate_score", "seconds"}}}``
(JSON) to argv[2]:

- ``alt-profanity-check``: ``predict_prob`` (profanity), decided at its own 0.5; it has no hate class, so its
  profanity decision stands for both tasks.
- ``hatesonar``: the ONNX pipeline of Davidson et al.'s model, batched; ``hate`` when the top class is
  ``hate_speech``, ``flag`` when it is hate speech or offensive language.
"""

import json
import sys
import time

import numpy as np
from hatesonar import Sonar
from profanity_check import predict_prob


def main() -> None:
    sets = json.loads(open(sys.argv[1], encoding="utf-8").read())
    sonar = Sonar()
    out = {"alt-profanity-check": {}, "hatesonar": {}}
    for name, texts in sets.items():
        t = time.perf_counter()
        prob = predict_prob(texts)
        seconds = time.perf_counter() - t
        decided = (prob >= 0.5).tolist()
        out["alt-profanity-check"][name] = {"hate": decided, "flag": decided, "hate_score": prob.tolist(),
                                            "seconds": seconds}  # fmt: skip
        t = time.perf_counter()
        labels, probs = [], []
        for start in range(0, len(texts), 512):
            lab, pr = sonar.sess.run(None, {"text": np.array(texts[start : start + 512], dtype=object)})
            labels += list(lab)
            probs += [[float(p[k]) for k in (0, 1, 2)] for p in pr]
        seconds = time.perf_counter() - t
        out["hatesonar"][name] = {
            "hate": [int(x) == 0 for x in labels],
            "flag": [int(x) in (0, 1) for x in labels],
            "hate_score": [p[0] for p in probs],
            "seconds": seconds,
        }
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()

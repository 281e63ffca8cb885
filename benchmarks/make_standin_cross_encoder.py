"""A cross-encoder with all-MiniLM-L6-v2's architecture and encoder weights and an untrained
one-logit head: the compute cost of a MiniLM-L6 cross-encoder (such as the ms-marco
MiniLM-L-6 rerankers) without downloading one. Its scores are meaningless: it serves load
tests and benchmarks of the service, never quality numbers.

    python benchmarks/make_standin_cross_encoder.py runs/service/minilm-ce
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main(out: str) -> None:
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    from densekit.models import packaged_minilm_path

    src = packaged_minilm_path()
    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(src, num_labels=1)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(src).save_pretrained(out)
    print(f"stand-in cross-encoder written to {Path(out).resolve()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", default="runs/service/minilm-ce", help="folder to write the model into")
    main(parser.parse_args().out)

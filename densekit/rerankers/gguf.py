"""Convert a GGUF checkpoint once into a plain Hugging Face model folder under the cache.

transformers can read GGUF files (`from_pretrained(folder, gguf_file=name)`), but it
dequantises every tensor on each load, which takes a while; saving the result once with
`save_pretrained` makes every later load an ordinary, fast safetensors load.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from densekit.atomic import atomic_dir
from densekit.errors import ModelLoadError


def _cache_key(gguf: Path) -> str:
    st = gguf.stat()
    # Name + size + mtime: cheap, and changes whenever the file is replaced.
    h = hashlib.sha256(f"{gguf.resolve()}|{st.st_size}|{int(st.st_mtime)}".encode()).hexdigest()[:12]
    return f"{gguf.stem}-{h}"


def converted_folder(gguf: str | Path, cache_dir: str | Path | None = None) -> Path:
    """Where the HF folder for `gguf` lives (or will live) in the cache."""
    if cache_dir is None:
        from densekit.settings import Settings

        cache_dir = Settings().cache_dir
    return Path(cache_dir) / "gguf-converted" / _cache_key(Path(gguf))


def convert_gguf(gguf: str | Path, cache_dir: str | Path | None = None) -> Path:
    """Return a HF model folder (config, safetensors, tokenizer) equal to `gguf`.

    Converts on the first call (atomically: a crash leaves no half-written folder) and
    returns the cached folder afterwards.
    """
    gguf = Path(gguf).expanduser()
    if not gguf.is_file():
        raise ModelLoadError(f"GGUF file not found: {gguf}")
    out = converted_folder(gguf, cache_dir)
    if (out / "config.json").is_file() and (out / "densekit_gguf.json").is_file():
        return out
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except Exception as exc:
        raise ModelLoadError(f"cannot read GGUF {gguf}: {exc}") from None
    # The tensors are already dequantised to float; drop the GGUF "quantizer" marker so the
    # model saves (and later loads) as an ordinary float checkpoint.
    model.hf_quantizer = None  # type: ignore[assignment]  # transformers types it as always set
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "densekit_gguf.json").write_text(json.dumps({"source": str(gguf.resolve()), "size": gguf.stat().st_size}))
    return out

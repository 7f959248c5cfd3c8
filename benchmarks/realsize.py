"""The MinerU2.5 architecture from the shipped spec, with random weights: no download.

Writes a model folder the built-in engine loads like the real one: the shipped config.json and
preprocessor_config.json, a tokenizer with all 151936 ids (Qwen2's special tokens at their real
ids) and random bf16 weights in model.safetensors. Output is noise; memory and speed are the
real model's.

    python benchmarks/realsize.py OUT_DIR [--device cuda]
    python benchmarks/realsize.py OUT_DIR --tiny     # the tests' tiny Qwen2-VL instead (CPU rehearsals)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
SPEC_DIR = ROOT / "src" / "mineru_fit" / "models" / "data" / "MinerU2.5-2509-1.2B"

# Qwen2's added tokens, at the ids its tokenizer gives them.
QWEN2_SPECIAL_IDS = {
    "<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645,
    "<|object_ref_start|>": 151646, "<|object_ref_end|>": 151647, "<|box_start|>": 151648,
    "<|box_end|>": 151649, "<|quad_start|>": 151650, "<|quad_end|>": 151651,
    "<|vision_start|>": 151652, "<|vision_end|>": 151653, "<|vision_pad|>": 151654,
    "<|image_pad|>": 151655, "<|video_pad|>": 151656,
}


def build_realsize(dest: Path, *, device: str = "cpu", config_overrides: Optional[dict[str, Any]] = None,
                   seed: int = 0) -> Path:
    """Write the folder; `config_overrides` shrinks it for tests (e.g. fewer layers)."""
    import torch
    from fixtures.offline_tokenizer import build_tokenizer
    from transformers import AutoConfig, Qwen2VLForConditionalGeneration

    from mineru_fit.engines.builtin.loader import FALLBACK_CHAT_TEMPLATE

    dest.mkdir(parents=True, exist_ok=True)
    config_data = json.loads((SPEC_DIR / "config.json").read_text())
    for key, value in (config_overrides or {}).items():
        if key == "vision_config":
            config_data["vision_config"].update(value)
        else:
            config_data[key] = value
    (dest / "config.json").write_text(json.dumps(config_data, indent=2))
    shutil.copy(SPEC_DIR / "preprocessor_config.json", dest / "preprocessor_config.json")
    build_tokenizer(dest, QWEN2_SPECIAL_IDS, vocab_size=config_data["vocab_size"], chat_template=FALLBACK_CHAT_TEMPLATE)

    torch.manual_seed(seed)
    config = AutoConfig.from_pretrained(dest)
    config.tie_word_embeddings = config_data["tie_word_embeddings"]
    config.get_text_config(decoder=True).tie_word_embeddings = config_data["tie_word_embeddings"]
    with torch.device(device):
        model = Qwen2VLForConditionalGeneration._from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(dest)
    # save_pretrained rewrites config.json in its own layout; keep the shipped (flat) one.
    (dest / "config.json").write_text(json.dumps(config_data, indent=2))
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny random Qwen2-VL (seconds, on the CPU)")
    args = parser.parse_args()
    start = time.perf_counter()
    if args.tiny:
        from fixtures.tiny_qwen2vl import build_tiny_qwen2vl

        # 64-wide vision layers: bitsandbytes' CPU 4-bit kernel needs whole 64-weight blocks.
        build_tiny_qwen2vl(args.out, vision={"embed_dim": 64})
    else:
        build_realsize(args.out, device=args.device)
    size = sum(p.stat().st_size for p in args.out.glob("*.safetensors"))
    print(f"wrote {args.out} ({size / 2**30:.2f} GiB of weights) in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()

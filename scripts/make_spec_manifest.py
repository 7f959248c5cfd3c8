"""Write models/data/<model>/tensors.json: every tensor transformers creates for the shipped config.

The model is built on the meta device (no memory, no weights), so this runs anywhere with
torch and transformers installed:  python scripts/make_spec_manifest.py [--check]
Names are written as a checkpoint stores them (what save_pretrained writes, and what the real
MinerU2.5 model.safetensors holds); tied weights appear once, as on disk.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parents[1] / "src" / "mineru_fit" / "models" / "data" / "MinerU2.5-2509-1.2B"
_DTYPES = {"torch.bfloat16": "BF16", "torch.float16": "F16", "torch.float32": "F32"}


def stored_tensors(config_dir: Path) -> list[dict]:
    """[{name, dtype, shape}] of the model transformers builds from config_dir/config.json."""
    import torch
    from transformers import AutoConfig, Qwen2VLForConditionalGeneration
    from transformers.core_model_loading import revert_weight_conversion

    config = AutoConfig.from_pretrained(config_dir)
    with torch.device("meta"):
        model = Qwen2VLForConditionalGeneration._from_config(config, dtype=torch.bfloat16)
    # keep_vars keeps the Parameter objects, so a tied lm_head shows up as the same object.
    seen: set[int] = set()
    state: dict = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) not in seen:
            seen.add(id(tensor))
            state[name] = tensor
    state = revert_weight_conversion(model, state)  # the names save_pretrained would write
    return [
        {"name": name, "dtype": _DTYPES[str(t.dtype)], "shape": list(t.shape)}
        for name, t in sorted(state.items())
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=DATA_DIR, help="folder with config.json; tensors.json goes there")
    parser.add_argument("--check", action="store_true", help="exit 1 if tensors.json differs instead of writing it")
    args = parser.parse_args(argv)
    tensors = stored_tensors(args.dir)
    # One tensor per line: small diffs when transformers changes, still plain JSON.
    text = "[\n" + ",\n".join(json.dumps(t) for t in tensors) + "\n]\n"
    target = args.dir / "tensors.json"
    if args.check:
        same = target.is_file() and json.loads(target.read_text()) == tensors
        print(f"{target}: {'up to date' if same else 'OUT OF DATE — rerun without --check'}")
        return 0 if same else 1
    target.write_text(text)
    params = sum(_numel(t["shape"]) for t in tensors)
    print(f"wrote {target}: {len(tensors)} tensors, {params:,} parameters")
    return 0


def _numel(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


if __name__ == "__main__":
    sys.exit(main())

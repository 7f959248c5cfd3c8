"""Every constant of the memory model, named, with where it comes from.

docs/memory-model.md explains each one. No other module may hide a margin or factor:
a number that changes a prediction lives here. Constants marked ESTIMATE are not yet
measured on a GPU; benchmarks/gpu_memory.py (issue 8) replaces them with measured values.
"""

from __future__ import annotations

from mineru_fit.units import GIB, MIB

# --- the MinerU two-step workload -------------------------------------------------------
# MinerU resizes each page to 1036×1036 for the layout step: (1036/28)² = 37² = 1369 tokens.
LAYOUT_IMAGE_SIDE_PX = 1036
# Chat template + the task prompt ("\nLayout Detection:", "\nText Recognition:", ...):
# about 20–30 tokens with Qwen2's template; rounded up.
PROMPT_TOKENS = 32
# Images in one request: MinerU sends one per request (a page, or one crop of it), and every
# engine's activations are sized for a batch of that many largest images per sequence
# (vLLM's --limit-mm-per-prompt, the built-in engine's per-request limit).
IMAGES_PER_REQUEST = 1
# The largest page image mineru-fit's parse side sends: a page that would render larger is
# rendered at a lower DPI (parsing/providers/pdf.py MAX_RENDER_PIXELS), and a crop of it is
# smaller still. Engines accept inputs up to this size whatever their own pixel cap.
MAX_PAGE_PIXELS = 40_000_000
# The shortest useful answer: a context that leaves less than this for output is refused.
MIN_OUTPUT_TOKENS = 256
# A content crop may use at most this share of what the prompt leaves of the context
# (the rest is output), until it reaches the processor's max_pixels.
CONTENT_IMAGE_SHARE = 0.5
# Requests in flight when the user gives no --concurrency: MinerU's largest VLM batch
# (it uses 8 on cards with 16 GB or more). Fixed, not derived from VRAM, so that more
# VRAM never changes what a level means.
DEFAULT_CONCURRENCY = 8

# --- quantization storage (bitsandbytes, fp8) -------------------------------------------
# bitsandbytes 4-bit: two weights per byte, one absmax per block of 64 weights.
NF4_BLOCK = 64
# With double quantization the absmax is stored as 8 bits, plus one fp32 scale per 256 blocks.
NF4_DQ_SECOND_BLOCK = 256
# bitsandbytes LLM.int8: one fp32 scale (SCB) per output row.
INT8_ROW_SCALE_BYTES = 4
# fp8 weights: one fp32 scale per output channel (per-tensor is smaller; we take the larger).
FP8_CHANNEL_SCALE_BYTES = 4

# --- activations --------------------------------------------------------------------------
# Vision tower, per patch, per layer (the peak is per layer, not cumulative), in widths of
# embed_dim: FACTS.md measured ~73 KiB/patch in fp32 (~37 KiB in bf16) for one real-size
# block with SDPA attention: 37 KiB / (1280 × 2 B) = 14.8.
VISION_ACT_WIDTHS = 14.8
# The language model's prefill, per token: gate, up, activation and product in the MLP
# (4 × intermediate) and residual, norm, q/k/v and attention output (6 × hidden).
LLM_ACT_INTERMEDIATE_WIDTHS = 4
LLM_ACT_HIDDEN_WIDTHS = 6
# Logits are float32; sampling keeps about one more copy (softmax/probabilities).
LOGITS_COPIES = 2

# --- runtime ------------------------------------------------------------------------------
# CUDA context + cuBLAS/cuDNN workspaces of one torch process. ESTIMATE: typically
# 300–600 MiB with lazy module loading; the larger end is taken.
CUDA_CONTEXT_BYTES = 512 * MIB
# The built-in engine on the CPU: what its process holds besides the weights once the model is
# loaded, in the RAM the plan budgets (on a GPU this is host memory, outside the plan): the image
# processor and tokenizer (122 MiB), the transformers code imported to load the model, Python's heap.
# ESTIMATE: 395–418 MiB measured above the weights right after load_model in eight fresh processes
# (realsize folder, fp32, 2-core CPU, 2026-12-01: six runs of benchmarks/engine_vs_mineru.py --memory,
# which records it as after_load_above_baseline_bytes, and two profiles); rounded up.
CPU_RUNTIME_BYTES = 448 * MIB
# ... and the processor's work on an image (resize, normalise, cut into patches, in float32 numpy
# arrays) on the same heap, in copies of the pixel values it hands over. ESTIMATE: encoding one
# 1036×1036 page raised RSS by 98 MiB, 4.0× its 24.6 MiB of pixel values (same machine and date).
CPU_PREPROCESS_COPIES = 4
# SGLang reserves 512 MiB for "constant metadata" in its own default heuristic
# (server_args._handle_gpu_memory_settings).
SGLANG_METADATA_BYTES = 512 * MIB
# vLLM's "non-torch forward increase": memory outside torch's allocator that appears after the
# worker started (cuBLAS workspaces, attention-backend buffers). The CUDA context itself is in
# vLLM's baseline and not counted. ESTIMATE: public single-GPU V1 logs show 0.02–0.07 GiB.
VLLM_NON_TORCH_BYTES = 96 * MIB
# With tensor parallelism NCCL adds its buffers: V0 logs with TP 2–4 show 0.20–0.25 GiB. ESTIMATE.
VLLM_NCCL_BYTES = 256 * MIB
# What SGLang loads into the static pool besides weights (rotary caches, buffers). ESTIMATE.
SGLANG_POOL_SLACK_BYTES = 64 * MIB

# --- the engines' own accounting (engine_memory.py; rules per version in engine_versions.py) ------
# The engine versions a plan assumes when none is installed: the newest each engine table holds
# (src/mineru_fit/engines/data/*.json).
DEFAULT_VLLM_VERSION = "0.26.0"
DEFAULT_SGLANG_VERSION = "0.5.5"
# vLLM keeps Qwen2-VL's M-RoPE cos/sin cache for 4 × max_position_embeddings positions
# (rotary_embedding/mrope.py, 0.10.1.1); SGLang for 1 × (layers/rotary_embedding.py, 0.4.7–0.5.5),
# in float32 on CUDA ("cache needs to be in FP32 for numerical stability").
VLLM_MROPE_CACHE_COPIES = 4
SGLANG_MROPE_CACHE_COPIES = 1
SGLANG_ROPE_CACHE_DTYPE_BYTES = 4
# vLLM allocates KV in blocks of 16 tokens (cache_config block_size default).
VLLM_BLOCK_TOKENS = 16
# Largest batch vLLM V1 captures in a CUDA graph by default (512 in 0.9–0.10 and ≥ 0.2x).
VLLM_MAX_CAPTURE_SIZE = 512
# vLLM's graph pool: the larger of a floor and, per layer, the hidden states of the largest captured
# batch. ESTIMATE fitted to logged captures: MinerU2.5 (24×896) 0.23–0.27 GiB, Qwen2.5-VL-7B
# (28×3584) 0.51–0.53 GiB, a 32×4096 LLaVA 0.67 GiB (docs/memory-model.md).
VLLM_GRAPH_MIN_BYTES = 276 * MIB
VLLM_GRAPH_BYTES_PER_HIDDEN = 11
# What SGLang's "mem usage" at load end holds beyond the caching allocator's segments for the
# parameters and the rotary cache (engine_memory.sglang_weight_bytes): memory outside torch taken
# while loading (CUDA modules of the first kernels). ESTIMATE: 0 — the public SGLang logs of
# Qwen2.5-VL-7B (15.70 GB) match the segments alone (15.70 GiB), docs/memory-model.md.
SGLANG_LOAD_EXTRA_BYTES = 0
# Vision tower activation per patch inside vLLM's profile run, in widths of embed_dim at the compute
# dtype (the float32 pixel values counted apart), per engine (V1 / V0). CALIBRATED on public logs
# (benchmarks/planner_vs_logs.py --fit): V1 on Qwen2.5-VL-7B / vLLM 0.9.0.1 / L4 (13.4 implied),
# held out on vLLM 0.23.0 / A100 (12.4 implied); V0 on the one V0 log with a multi-image profile
# (Lingshu-7B, 16.1 implied), no hold-out. docs/memory-model.md gives the logs and the spread.
ENGINE_VISION_ACT_WIDTHS = {"v1": 13.5, "v0": 16.5}

# --- CUDA graphs --------------------------------------------------------------------------
# SGLang reserves 2 MiB per captured batch size in its own heuristic; we use the same for vLLM.
CUDA_GRAPH_BYTES_PER_BS = 2 * MIB
CUDA_GRAPH_BASE_BYTES = 64 * MIB

# --- margins --------------------------------------------------------------------------------
# The caching allocator rounds and fragments: a share of the dynamic memory, at least a floor.
ALLOCATOR_MARGIN_FRACTION = 0.10
ALLOCATOR_MARGIN_MIN_BYTES = 64 * MIB
# On the CPU the allocator is glibc's heap, which fragments under a prefill's activations and keeps
# what it freed (engines/builtin/hostmemory.py). ESTIMATE: a 1036×1036 layout page's prefill on the
# real-size architecture in fp32 raised RSS by 794–820 MiB against 420 MiB of activations (1.9–1.95×;
# 2-core CPU, 2026-12-01): the margin is this share of the activations.
CPU_HEAP_MARGIN_FRACTION = 1.0
# `auto` keeps this share of the budget free: the planner may under-predict by up to 3%
# (issue 8's bound), and an under-prediction is an OOM.
FIT_HEADROOM_FRACTION = 0.03

# --- engine defaults (what "none" means) --------------------------------------------------
VLLM_DEFAULT_GPU_MEMORY_UTILIZATION = 0.9
VLLM_DEFAULT_MAX_NUM_SEQS = 256
# SGLang's default mem_fraction_static (newer releases): (gpu_mem − reserved) / gpu_mem with
# reserved = 512 MiB + 1.5 MiB × max(chunked_prefill_size, 2048) + 2 MiB × cuda_graph_max_bs,
# at least 10 GiB on cards above 60 GiB. chunked_prefill_size: 2048 below 35 GiB, else 8192.
SGLANG_RESERVED_BASE_MIB = 512
SGLANG_RESERVED_MIB_PER_CHUNK_TOKEN = 1.5
SGLANG_LARGE_CARD_BYTES = 60 * GIB
SGLANG_LARGE_CARD_MIN_RESERVED_BYTES = 10 * GIB
SGLANG_SMALL_CARD_BYTES = 35 * GIB
SGLANG_DEFAULT_MAX_RUNNING = 256
# Graph batch sizes SGLang captures by default: small cards few, big cards many. ESTIMATE.
SGLANG_SMALL_CARD_GRAPH_BS = 24
SGLANG_LARGE_CARD_GRAPH_BS = 160
# Prefill chunk when the engine decides (vLLM V1's online default, SGLang's on big cards).
ENGINE_DEFAULT_CHUNK_TOKENS = 8192
SMALL_CARD_CHUNK_TOKENS = 2048
# Fractions are passed to engines with two decimals, rounded up so the pool still holds the plan.
FRACTION_STEP = 0.01

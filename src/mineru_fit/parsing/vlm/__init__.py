"""The vlm tier: MinerU2.5 through mineru-vl-utils, in-process or over HTTP, within the memory budget."""

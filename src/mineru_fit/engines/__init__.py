"""Turn a Plan into a running server: SGLang, vLLM, or the built-in transformers engine."""

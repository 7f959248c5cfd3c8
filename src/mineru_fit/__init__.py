"""mineru-fit: run MinerU2.5 document parsing on the GPU you have."""

__version__ = "0.1.0"

"""Defaults that several parts share, each defined once here (torch-free, so commands can
show them in ``--help`` without importing PyTorch)."""

# Most pairs per model call: the Retriever's chunk on CUDA (and its cap on CPU), the TensorRT
# engine's profile maximum and the Triton Inference Server model's max_batch_size.
MAX_BATCH = 32

# Moments kept per (video, query) pair unless asked otherwise: what a QVHighlights submission
# holds (the official evaluator ranks up to 10 windows per query; Moment-DETR writes 10).
TOP_K = 10

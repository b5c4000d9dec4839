"""int8 weight-only quantization: conversion (int8.py), quantized model folders (folder.py) and
the quality gate (gate.py). See docs/QUANTIZATION.md."""

from .int8 import QUANTIZE_CHOICES, SCHEME, bf16_bytes, quantize_int8, weight_bytes

__all__ = ["QUANTIZE_CHOICES", "SCHEME", "bf16_bytes", "quantize_int8", "weight_bytes"]

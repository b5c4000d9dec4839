"""Evaluation: feature extractors (the synthetic-domain probe, optional Inception/I3D/VGG) and metrics on features."""

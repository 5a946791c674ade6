"""Triton kernels for RobustFT (imported as robustft.kernels)."""

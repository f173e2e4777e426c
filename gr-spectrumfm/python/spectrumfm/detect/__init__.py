"""Classical detectors: the baselines the neural models are compared to (numpy/scipy only)."""

from .energy import EnergyDetector, EnergyDetectorConfig

__all__ = ["EnergyDetector", "EnergyDetectorConfig"]

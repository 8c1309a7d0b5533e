"""Training: data and augmentation, RCN/DKM and temporal training, calibration, synthetic video."""

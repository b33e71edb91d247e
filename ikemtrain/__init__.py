"""ikemtrain: six-modality contrastive pre-training (MoCo, EKEM, IKEM) on skelmod caches."""

__version__ = "0.1.0"

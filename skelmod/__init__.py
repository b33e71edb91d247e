"""skelmod: NTU RGB+D raw skeletons to an HDF5 cache of six modalities.

Never imports torch.
"""

__version__ = "0.1.0"

"""Labelled IQ datasets for training and evaluation: readers, splits and a torch adapter.

``open_dataset("KIND:PATH")`` reads RadioML 2016.10a, RadioML 2018.01A, the generator's
HDF5 shards and annotated SigMF recordings as one :class:`IQDataset` of complex64 windows;
``split_indices`` splits it by a seed, stratified by class and SNR. numpy and h5py only:
torch is imported by ``IQDataset.torch()`` alone.
"""

from spectrumfm.data.dataset import IQDataset, LazyWindows
from spectrumfm.data.radioml import RML2018_CLASSES
from spectrumfm.data.readers import (
    ANOMALY_CLASSES, KINDS, SENSING_CLASSES, SNR_MOBILITY_CLASSES, TASKS, open_dataset,
)
from spectrumfm.data.split import split_indices

__all__ = ["open_dataset", "IQDataset", "LazyWindows", "split_indices", "KINDS", "TASKS",
           "RML2018_CLASSES", "SENSING_CLASSES", "ANOMALY_CLASSES", "SNR_MOBILITY_CLASSES"]

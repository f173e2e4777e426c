"""An :class:`~spectrumfm.data.dataset.IQDataset` as a ``torch.utils.data.Dataset``.

Kept apart so that the readers import without torch. Items are
``(complex64 tensor (window_len,), int64 label, float32 SNR in dB)``, which the features
(:func:`spectrumfm.features.iq_features`) take as they are after the default collate.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

__all__ = ["TorchIQDataset"]


class TorchIQDataset(Dataset):
    """Wraps an IQDataset (``IQDataset.torch()`` builds one)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        iq, label, snr = self.dataset[i]
        return (torch.from_numpy(iq), torch.tensor(label, dtype=torch.int64),
                torch.tensor(snr, dtype=torch.float32))

    def __getitems__(self, indices):
        # DataLoader hands a whole batch here when the method exists: one read of k rows
        # instead of k reads, which is what makes an HDF5-backed dataset fast enough.
        iq, labels, snr = self.dataset.batch(indices)
        iq, labels, snr = torch.from_numpy(iq), torch.from_numpy(labels), torch.from_numpy(snr)
        return [(iq[k], labels[k], snr[k]) for k in range(len(indices))]

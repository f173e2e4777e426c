"""A small CNN trained from scratch on spectrogram images: the few-shot baseline.

LWM-Spectro's downstream comparison (paper §V, Table II, III) sets its frozen and fine-tuned
encoder against "Deep CNN", the spectrogram classifier of Kojima et al. (IEEE Trans.
Commun. 2021) trained from scratch on the same images. This is a compact model in that
spirit, not a re-implementation of their exact layer list: a few conv 3x3 - BatchNorm -
ReLU - max-pool 2 blocks doubling the width, global average pooling, dropout and a linear
classifier. It reads the images the pretrained model itself computes
(``LWMSpectro.features``: the same STFT and corpus normalisation), so the comparison is
between the learnt representation and none, on identical inputs.

It is not registered with :func:`spectrumfm.models.create_model`: it is a baseline of the
few-shot protocol (:mod:`spectrumfm.train.few_shot`), never shipped or pretrained.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["SpectrogramCNN"]


class SpectrogramCNN(nn.Module):
    """Images (B, T, K) -> logits (B, n_classes), trained from scratch.

    With the default widths 16 / 32 / 64 / 128 it has 97,392 parameters plus 129 per
    class: small enough that a few hundred examples per class can train it, which is the
    regime the few-shot curves are about. Global average pooling makes it indifferent to
    the image size (any T, K of at least 2^blocks works), so the same baseline serves the
    paper's 128 x 128 images and the tests' 16 x 16 ones.

    Args:
        n_classes: output logits.
        widths: output channels of each block; each block halves T and K.
        dropout: on the pooled (B, widths[-1]) vector before the classifier.
    """

    def __init__(self, n_classes: int, widths: tuple[int, ...] = (16, 32, 64, 128),
                 dropout: float = 0.3):
        super().__init__()
        if n_classes < 1 or not widths or min(widths) < 1:
            raise ValueError(f"n_classes {n_classes} and every width {widths} must be positive")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout {dropout} must lie in [0, 1)")
        blocks, c_in = [], 1
        for c_out in widths:
            # No conv bias: the BatchNorm right after it has its own shift.
            blocks += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.min_side = 2 ** len(widths)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(c_in, n_classes)

    def forward(self, images: Tensor) -> Tensor:
        """images (B, T, K) -> logits (B, n_classes)."""
        if images.dim() != 3 or min(images.shape[1:]) < self.min_side:
            raise ValueError(f"expected images (B, T, K) with T, K >= {self.min_side}, got "
                             f"{tuple(images.shape)}")
        h = self.blocks(images[:, None])                               # (B, C, T/2^n, K/2^n)
        return self.classifier(self.dropout(h.mean(dim=(2, 3))))       # GAP: (B, C)

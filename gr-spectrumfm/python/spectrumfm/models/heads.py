"""Task heads that turn encoder tokens (B, N, d) into per-window logits (paper §II-C).

The paper aggregates the tokens with a GRU before a linear layer for technology
classification and spectrum sensing, and uses linear layers alone otherwise. Both heads here
read the output of ``SpectrumFM.forward_encoder`` and are saved beside a LoRA adapter, so
their parameter names avoid the encoder's ``LORA_TARGETS`` suffixes.
"""

from __future__ import annotations

from torch import Tensor, nn


class GRUHead(nn.Module):
    """Bidirectional GRU over the token sequence, then a linear classifier.

    Pooling takes the final hidden state of each direction (forward after the last token,
    backward after the first), so both have read the whole window. The authors' code took
    the last time step of the output sequence instead, where the backward direction has seen
    a single token.

    Args:
        d_model: width d of the encoder tokens.
        n_classes: number of output logits (2 for occupied / vacant sensing).
        hidden: GRU hidden size per direction. 128 keeps the head at about 0.3 M parameters
            on the paper model, small next to its 15.8 M, as a fine-tuned head should be.
        dropout: applied to the pooled vector before the classifier.
    """

    def __init__(self, d_model: int, n_classes: int, hidden: int = 128, dropout: float = 0.1):
        super().__init__()
        self.gru = nn.GRU(d_model, hidden, batch_first=True, bidirectional=True)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(2 * hidden, n_classes)

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens (B, N, d) -> logits (B, n_classes)."""
        _, h_n = self.gru(tokens)                                 # (2, B, hidden)
        pooled = h_n.transpose(0, 1).reshape(tokens.shape[0], -1)  # (B, 2 * hidden)
        return self.classifier(self.dropout(pooled))


class LinearHead(nn.Module):
    """Mean over the tokens, then one linear layer: the cheapest probe of a backbone.

    Suits modulation classification probes and a learned anomaly score (``n_classes=1``).

    Args:
        d_model: width d of the encoder tokens.
        n_classes: number of output logits.
        dropout: applied to the pooled vector before the linear layer.
    """

    def __init__(self, d_model: int, n_classes: int, dropout: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(d_model, n_classes)

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens (B, N, d) -> logits (B, n_classes)."""
        return self.classifier(self.dropout(tokens.mean(dim=1)))

"""Split a band into equal channels on the device: the occupancy grid's sub-bands.

Each channel ``k`` of ``C`` is the stream shifted down by its centre frequency, low-pass
filtered to ``samp_rate / (2 C)`` and decimated by ``C`` (critically sampled), so channel
``k`` holds the band ``[f_k - fs / 2C, f_k + fs / 2C)`` at rate ``fs / C``, with centre
``f_k = (k + 1/2) fs / C - fs / 2`` from the tuned frequency: the channels tile the band from
its lowest frequency (``k = 0``) to its highest, as the energy detector's grid does.

Why not GNU Radio's ``pfb_channelizer_ccf``: this runs inside the ML core (no GNU Radio) on
the model's device, in the same code for training data and the stream, so the windows the
sensing adapter was trained on are cut exactly as the live ones. It is the direct form
(mix, filter, decimate: one strided ``conv1d`` for all channels at once) rather than the
polyphase FFT form: at 16 channels and 12 taps per channel it costs about 13 complex
multiply-adds per input sample per channel, negligible beside the model.

The prototype filter is a Kaiser-windowed sinc with its -6 dB point at the channel edge, so
white noise stays nearly white after decimation (the aliased transition bands fill the
edges back up) and a noise-only channel looks like noise to the model, not like a filtered
signal.

``oversample = 2`` widens each channel's view to twice its width (half of each neighbour on
either side) at twice the rate: the channel proper is the middle half of a window's spectrum
and its neighbours' halves are the edges. The model's features are normalised per window, so
they carry no absolute level; a channel seen with its surroundings shows an occupied channel
as a step in the spectrum against the noise beside it, which a window of the channel alone,
where a signal filling it looks as white as noise, cannot show.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["Channelizer", "prototype_taps"]


def prototype_taps(n_channels: int, taps_per_channel: int = 12, beta: float = 7.0) -> np.ndarray:
    """Low-pass prototype, unit DC gain, cutoff (-6 dB) at ``0.5 / n_channels`` cycles/sample."""
    n = n_channels * taps_per_channel + 1
    t = np.arange(n) - (n - 1) / 2
    h = np.sinc(t / n_channels) * np.kaiser(n, beta)
    return (h / h.sum()).astype(np.float64)


class Channelizer:
    """``C`` equal channels of a complex stream, each at ``1 / C`` of the rate.

    Args:
        n_channels: number of channels C (>= 1). One channel is the whole band, unfiltered.
        taps_per_channel: prototype length per channel (filter sharpness).
        device: where the filtering runs (the model's device).

    ``channelizer(x)`` takes complex ``(T,)`` (numpy or torch) and returns complex64
    ``(C, T // D)`` with ``D = C / oversample`` the decimation: output sample ``m`` of every
    channel is centred on input sample ``m D + D / 2`` (the filter's delay is compensated; the
    stream's ends are zero-padded).
    """

    def __init__(self, n_channels: int, taps_per_channel: int = 12, device="cpu",
                 oversample: int = 1):
        if n_channels < 1:
            raise ValueError(f"n_channels must be >= 1, got {n_channels}")
        if oversample < 1 or n_channels % oversample:
            raise ValueError(f"oversample must be >= 1 and divide n_channels ({n_channels}), "
                             f"got {oversample}")
        self.n_channels, self.device = int(n_channels), torch.device(device)
        self.oversample = int(oversample)
        C = self.n_channels
        # Decimation: C critically sampled, C / oversample with the wider view.
        self.decimation = D = C // self.oversample
        h = prototype_taps(D, taps_per_channel) if D > 1 else np.ones(1)
        self.n_taps = len(h)
        # Variance of a channel's output sample per unit of input noise variance (white
        # input): the sum of the squared taps. The stream's noise floor times this is the
        # noise a channel window carries.
        self.noise_gain = float(np.sum(h ** 2))
        # Channel k's filter is the prototype shifted to the channel centre (a band-pass);
        # band-passing then mixing down (in __call__) equals mixing down then low-passing.
        # Centres: (k + 1/2) / C - 1/2 cycles per sample.
        centres = (np.arange(C) + 0.5) / C - 0.5
        self.centres = centres
        n = np.arange(self.n_taps) - (self.n_taps - 1) / 2
        bank = h[None, :] * np.exp(2j * np.pi * centres[:, None] * n[None, :])   # (C, L)
        # conv1d correlates, so the taps go in reversed; real and imaginary parts as a
        # 2-in 2-out real convolution per channel.
        bank = bank[:, ::-1]
        w = np.zeros((2 * C, 2, self.n_taps), np.float32)
        w[0::2, 0], w[0::2, 1] = bank.real, -bank.imag      # real out = hr*xr - hi*xi
        w[1::2, 0], w[1::2, 1] = bank.imag, bank.real       # imag out = hi*xr + hr*xi
        self._weight = torch.from_numpy(w).to(self.device)
        self._centres = torch.as_tensor(centres, dtype=torch.float64, device=self.device)

    def channel_edges(self, samp_rate: float, center_freq: float = 0.0) -> np.ndarray:
        """(C, 2) absolute [low, high) edges of every channel, Hz."""
        C = self.n_channels
        lo = center_freq - samp_rate / 2 + np.arange(C) * samp_rate / C
        return np.stack([lo, lo + samp_rate / C], axis=1)

    @torch.no_grad()
    def __call__(self, x) -> torch.Tensor:
        x = torch.as_tensor(x)
        if x.dim() != 1 or not x.is_complex():
            raise ValueError(f"expected a complex (T,) stream, got {tuple(x.shape)} {x.dtype}")
        x = x.to(self.device, torch.complex64)
        C, D = self.n_channels, self.decimation
        T = (x.shape[0] // D) * D
        if C == 1:
            return x[None, :T].clone()
        half = (self.n_taps - 1) // 2
        xr = torch.view_as_real(x[:T]).T[None]                       # (1, 2, T)
        # Centre output m on input m D + D/2 (D even) so the windows line up with the
        # samples they cover; pad both ends so the first and last outputs exist.
        shift = D // 2
        xr = torch.nn.functional.pad(xr, (half - shift, half + shift))
        y = torch.nn.functional.conv1d(xr, self._weight, stride=D)   # (1, 2C, M)
        y = y[0, :, :T // D]                                          # (2C, M)
        band = torch.complex(y[0::2], y[1::2])                        # (C, M) band-passed
        m = torch.arange(band.shape[1], device=self.device, dtype=torch.float64)
        # Mix down: the band-passed channel at input index m D + D/2 still rotates at its
        # centre frequency; remove that rotation.
        phase = -2 * np.pi * self._centres[:, None] * (m[None, :] * D + shift)
        rot = torch.polar(torch.ones_like(phase), phase).to(torch.complex64)
        return band * rot

"""The occupancy grid's channeliser (spectrumfm.infer.channelizer): where a tone lands, at
which baseband frequency, aligned with which input samples; the twice-wide view."""

import numpy as np
import pytest

from spectrumfm.infer.channelizer import Channelizer

C = 16
n = np.arange(C * 2048)


def _tone(channel, offset):
    """A tone ``offset`` channel widths from the centre of ``channel``."""
    f = (channel + 0.5) / C - 0.5 + offset / C
    return np.exp(2j * np.pi * f * n).astype(np.complex64)


def _power_db(y):
    p = (np.abs(y[:, 64:-64]) ** 2).mean(axis=1)
    return 10 * np.log10(p / p.max() + 1e-30)


@pytest.mark.parametrize("channel, offset", [(0, 0.0), (3, 0.3), (12, -0.3), (15, 0.0)])
def test_a_tone_lands_in_its_channel_at_its_offset(channel, offset):
    ch = Channelizer(C)
    y = ch(_tone(channel, offset)).numpy()
    assert y.shape == (C, len(n) // C)
    db = _power_db(y)
    assert np.argmax(db) == channel
    assert np.delete(db, channel).max() < -60          # the others are 60 dB down or more
    # Baseband frequency in cycles per output sample: offset channel widths at rate fs / C.
    f = np.angle(np.mean(y[channel, 65:-64] * np.conj(y[channel, 64:-65]))) / (2 * np.pi)
    assert f == pytest.approx(offset, abs=1e-3)


@pytest.mark.parametrize("oversample", [1, 2])
def test_output_samples_line_up_with_the_input(oversample):
    ch = Channelizer(C, oversample=oversample)
    x = np.zeros(len(n), np.complex64)
    x[5000] = 1
    y = ch(x).numpy()
    assert abs(np.argmax(np.abs(y[7])) - 5000 / ch.decimation) <= 1


def test_noise_stays_white_in_a_channel():
    rng = np.random.default_rng(0)
    w = ((rng.standard_normal(len(n)) + 1j * rng.standard_normal(len(n))) / np.sqrt(2))
    y = Channelizer(C)(w.astype(np.complex64)).numpy()
    psd = (np.abs(np.fft.fft(y[5, :2048].reshape(-1, 128), axis=1)) ** 2).mean(axis=0)
    psd_db = 10 * np.log10(psd / psd.mean())
    assert np.abs(psd_db).max() < 4          # nearly flat: a vacant channel looks like noise
    assert np.var(y[5]) * C == pytest.approx(1.0, rel=0.15)


def test_twice_wide_view_sees_half_of_each_neighbour():
    ch = Channelizer(C, oversample=2)
    # A tone 0.3 channel widths above channel 3's centre is in channel 3 and, in the wide
    # view, at the lower edge of channel 4's window; one at its centre is at the very edges of
    # channels 2's and 4's views, where their filters are 6 dB down.
    y = ch(_tone(3, 0.3)).numpy()
    assert y.shape == (C, 2 * len(n) // C)
    db = _power_db(y)
    assert db[3] > -1 and db[4] > -3 and np.delete(db, [3, 4]).max() < -40
    f = np.angle(np.mean(y[3, 65:-64] * np.conj(y[3, 64:-65]))) / (2 * np.pi)
    assert f == pytest.approx(0.3 / 2, abs=1e-3)   # at twice the rate
    db = _power_db(ch(_tone(3, 0.0)).numpy())
    assert db[2] == pytest.approx(-6.0, abs=0.5) and db[4] == pytest.approx(-6.0, abs=0.5)
    assert np.delete(db, [2, 3, 4]).max() < -40


def test_bad_arguments():
    with pytest.raises(ValueError, match="oversample"):
        Channelizer(16, oversample=3)
    with pytest.raises(ValueError, match="n_channels"):
        Channelizer(0)
    with pytest.raises(ValueError, match="complex"):
        Channelizer(4)(np.zeros(64, np.float32))

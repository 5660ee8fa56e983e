"""Frame arithmetic and the log-mel frontend."""

import numpy as np
import pytest
import torch
from torchaudio.compliance import kaldi

from encodecmae import CROP_FRAMES, CROP_SAMPLES, FRAME_RATE, HOP, SAMPLE_RATE
from encodecmae.evaluation.embed import chunk_bounds, frame_times_ms
from encodecmae.model.features import LogMel, build_frontend, n_frames


def test_frame_arithmetic():
    assert (SAMPLE_RATE, HOP, FRAME_RATE) == (24_000, 320, 75)
    assert CROP_SAMPLES == 96_000 and CROP_FRAMES == 300
    assert n_frames(96_000) == 300 and n_frames(96_001) == 301 and n_frames(320) == 1
    mel = LogMel(256)
    assert mel(torch.zeros(2, 96_000)).shape == (2, 300, 256)
    assert mel(torch.zeros(1, 1000)).shape == (1, 4, 256)  # padded to a whole frame: ceil(1000/320)
    assert LogMel(128)(torch.zeros(1, 96_000)).shape == (1, 300, 128)
    # 4-s chunks of a 10-s clip and the timestamp of each frame centre
    assert chunk_bounds(240_000) == [(0, 96_000), (96_000, 192_000), (192_000, 240_000)]
    ts = frame_times_ms(3)
    assert ts.tolist() == pytest.approx([20 / 3, 20.0, 100 / 3])  # (320 t + 160) / 24 ms


def test_log_mel_equals_kaldi_fbank_with_exact_hop():
    torch.manual_seed(0)
    wav = 0.1 * torch.randn(2, 24_000)
    ours = LogMel(256, mean=0.0, std=1.0)(wav)
    # frame_shift in ms rounds down to 319 samples unless nudged: we use exactly 320
    ref = kaldi.fbank(wav[1:2], num_mel_bins=256, frame_length=640 / 24 + 1e-4, frame_shift=320 / 24 + 1e-4,
                      sample_frequency=24_000, dither=0.0, window_type="hanning", snip_edges=False, use_energy=False)
    assert ref.shape == ours[1].shape == (75, 256)
    assert torch.allclose(ours[1], ref, atol=1e-4)


@pytest.mark.parametrize("seconds", [4, 10, 1])
def test_released_framing_equals_the_released_kaldi_fbank(seconds):
    """mel_framing="released": Kaldi's fbank with the released code's 13.28/26.56-ms framing
    (snip_edges), cropped to the 75-Hz frame count; short signals are zero-padded."""
    torch.manual_seed(0)
    wav = 0.1 * torch.randn(1, 24_000 * seconds)
    ours = LogMel(256, mean=0.0, std=1.0, framing="released")(wav)[0]
    ref = kaldi.fbank(wav, num_mel_bins=256, frame_length=26.56, frame_shift=13.28, sample_frequency=24_000,
                      dither=0.0, window_type="hanning", htk_compat=True, use_energy=False)
    n = 75 * seconds
    assert ours.shape == (n, 256)
    assert ref.shape[0] == {4: 300, 10: 753, 1: 74}[seconds]  # 1 + (N - 637) // 318
    k = min(n, ref.shape[0])
    assert torch.allclose(ours[:k], ref[:k], atol=1e-4)
    assert not torch.allclose(ours, LogMel(256, mean=0.0, std=1.0)(wav)[0], atol=1e-2)  # not the aligned framing
    with pytest.raises(ValueError, match="unknown mel framing"):
        LogMel(256, framing="centred")


def test_mel_frame_t_is_centred_on_encodec_frame_t():
    # a click at sample 320 t + 160 (the centre of EnCodec frame t's hop span) peaks in mel frame t
    for t in (3, 100, 298):
        wav = torch.zeros(1, 96_000)
        wav[0, 320 * t + 160] = 1.0
        energy = LogMel(128, mean=0, std=1)(wav)[0].exp().sum(-1)
        assert int(energy.argmax()) == t


def test_mel_normalisation_and_unknown_frontend():
    mel = LogMel(128)
    raw = LogMel(128, mean=0.0, std=1.0)
    x = 0.05 * torch.randn(1, 9600)
    assert torch.allclose(mel(x), (raw(x) + 6.12) / 4.82, atol=1e-5)
    with pytest.raises(ValueError, match="unknown input kind"):
        build_frontend("mfcc40")

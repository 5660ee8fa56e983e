"""EnCodecMAE: masked autoencoders that predict EnCodec tokens.

Frame arithmetic shared by every module: audio at 24 kHz, one frame per 320 samples
(75 frames/s), so a 4-s crop (96,000 samples) is exactly 300 feature frames, 300 EnCodec
token frames and 300 cluster ids.
"""

__version__ = "0.1.0"

SAMPLE_RATE = 24_000
HOP = 320
FRAME_RATE = SAMPLE_RATE // HOP  # 75 frames/s
CROP_SECONDS = 4.0
CROP_SAMPLES = int(CROP_SECONDS * SAMPLE_RATE)  # 96,000
CROP_FRAMES = CROP_SAMPLES // HOP  # 300

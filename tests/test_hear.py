"""The HEAR API contract (the checks of HEAR's hear-validator)."""

import numpy as np
import pytest
import torch
from torch import nn

from encodecmae.evaluation import hear
from encodecmae.evaluation.embed import Embedder


@pytest.fixture(scope="module")
def model(debug_checkpoint):
    return hear.load_model(str(debug_checkpoint))


def test_model_attributes(model):
    assert isinstance(model, nn.Module)
    assert isinstance(model.sample_rate, int) and model.sample_rate in (16_000, 22_050, 44_100, 48_000)
    assert isinstance(model.scene_embedding_size, int) and isinstance(model.timestamp_embedding_size, int)
    assert model.scene_embedding_size == model.timestamp_embedding_size == 64


@pytest.mark.parametrize("seconds", [0.5, 1.0, 4.0, 6.3])
def test_embedding_shapes_types_and_timestamps(model, seconds):
    n = int(seconds * model.sample_rate)
    audio = 0.1 * torch.randn(3, n, generator=torch.Generator().manual_seed(0))
    scene = hear.get_scene_embeddings(audio, model)
    assert scene.dtype == torch.float32 and scene.shape == (3, model.scene_embedding_size)
    emb, ts = hear.get_timestamp_embeddings(audio, model)
    frames = int(np.ceil(n * 24_000 / model.sample_rate / 320))  # 75 frames/s after resampling to 24 kHz
    assert emb.dtype == torch.float32 and emb.shape == (3, frames, model.timestamp_embedding_size)
    assert ts.dtype == torch.float32 and ts.shape == (3, frames)
    step = torch.diff(ts, dim=1)
    assert torch.allclose(step, torch.full_like(step, 1000 / 75), atol=1e-3)  # regular, in milliseconds
    assert abs(float(ts[0, -1]) - seconds * 1000) < 1000 / 75  # covers the sound
    assert torch.allclose(scene, emb.mean(1), atol=1e-5)  # scene = mean over time of the frames
    assert torch.isfinite(emb).all()


def test_batch_independence_and_silence(model):
    g = torch.Generator().manual_seed(1)
    audio = 0.1 * torch.randn(4, 16_000 * 5, generator=g)
    audio[2] = 0.0
    batch = hear.get_scene_embeddings(audio, model)
    alone = hear.get_scene_embeddings(audio[1:2], model)
    assert torch.allclose(batch[1], alone[0], atol=1e-4)
    assert torch.isfinite(batch[2]).all()
    assert not torch.allclose(batch[0], batch[1])


def test_long_audio_is_cut_into_4s_chunks_and_concatenated(debug_checkpoint):
    emb = Embedder(debug_checkpoint)
    x = 0.1 * np.random.default_rng(0).standard_normal(24_000 * 10).astype(np.float32)
    frames = emb.frames([x])[0]
    assert frames.shape == (750, 64)
    parts = emb.frames([x[:96_000], x[96_000:192_000], x[192_000:]])
    assert np.allclose(frames, np.concatenate(parts), atol=1e-5)
    assert np.allclose(emb.scenes([x])[0], frames.mean(0), atol=1e-6)


def test_numpy_audio_gives_the_same_torch_tensors(model):
    """HEAR's runner may hand numpy arrays (float64 from soundfile): the outputs stay float32
    torch tensors, equal to those of the same audio as a tensor."""
    audio = 0.1 * np.random.default_rng(2).standard_normal((2, 16_000 * 2))  # float64
    ref_scene = hear.get_scene_embeddings(torch.from_numpy(audio).float(), model)
    ref_emb, ref_ts = hear.get_timestamp_embeddings(torch.from_numpy(audio).float(), model)
    scene = hear.get_scene_embeddings(audio, model)
    emb, ts = hear.get_timestamp_embeddings(audio, model)
    for got, ref in ((scene, ref_scene), (emb, ref_emb), (ts, ref_ts)):
        assert isinstance(got, torch.Tensor) and got.dtype == torch.float32 and got.device.type == "cpu"
        assert got.shape == ref.shape and torch.allclose(got, ref, atol=1e-5)
    assert torch.allclose(hear.get_scene_embeddings(audio.astype(np.float32), model), ref_scene, atol=1e-5)
    with pytest.raises(ValueError, match=r"audio\[None\]"):
        hear.get_scene_embeddings(audio[0], model)


def test_embed_task_reads_a_split_in_blocks_with_the_same_result(tmp_path, debug_checkpoint, monkeypatch):
    from test_provenance import write_audio_task

    from encodecmae.evaluation import embed

    task = write_audio_task(tmp_path / "task")
    embed.embed_task(debug_checkpoint, task, tmp_path / "whole.npz")
    monkeypatch.setattr(embed, "BLOCK_FILES", 4)  # 6 clips per split: blocks of 4 and 2
    embed.embed_task(debug_checkpoint, task, tmp_path / "blocks.npz")
    a, b = np.load(tmp_path / "whole.npz"), np.load(tmp_path / "blocks.npz")
    for split in ("train", "valid", "test"):
        assert a[f"emb_{split}"].shape == (6, 64)
        np.testing.assert_allclose(b[f"emb_{split}"], a[f"emb_{split}"], atol=1e-6)
        assert a[f"files_{split}"].tolist() == b[f"files_{split}"].tolist()


def test_a_long_file_is_streamed_with_the_whole_file_result(tmp_path, debug_checkpoint, monkeypatch):
    """embed-task streams a file longer than LONG_FILE_SECONDS a block at a time (memory for one
    block); its scene embedding is that of the whole file, 16-kHz audio resampled to 24 kHz as
    the task's other clips are. 150 s at 16 kHz: three 60-s reading blocks, 4-s chunks across them."""
    import soundfile as sf

    from test_provenance import write_audio_task

    from encodecmae.evaluation import embed

    task = write_audio_task(tmp_path / "task")
    sr = 16_000
    long_clip = 0.1 * np.random.default_rng(3).standard_normal(150 * sr)
    name = sorted((task / str(sr) / "test").iterdir())[0]
    sf.write(name, long_clip, sr, subtype="FLOAT")
    emb = Embedder(debug_checkpoint)
    whole = emb.scenes([long_clip.astype(np.float32)], sr)[0]
    np.testing.assert_allclose(emb.stream_scene(name), whole, rtol=1e-5, atol=1e-5)

    embed.embed_task(debug_checkpoint, task, tmp_path / "loaded.npz")
    monkeypatch.setattr(embed, "LONG_FILE_SECONDS", 100.0)
    embed.embed_task(debug_checkpoint, task, tmp_path / "streamed.npz")
    a, b = np.load(tmp_path / "loaded.npz"), np.load(tmp_path / "streamed.npz")
    for split in ("train", "valid", "test"):
        np.testing.assert_allclose(b[f"emb_{split}"], a[f"emb_{split}"], rtol=1e-5, atol=1e-5)


def test_all_layers_of_a_model_trained_here(debug_checkpoint):
    """layer="all": every hidden state (L blocks and the output), each as its own layer gives it;
    the scene embedding per layer. A bad layer name is refused."""
    audio = 0.1 * torch.randn(2, 16_000 * 5, generator=torch.Generator().manual_seed(4))
    every = hear.load_model(str(debug_checkpoint), layer="all")
    emb = hear.get_timestamp_embeddings(audio, every)[0]
    assert emb.shape == (2, 3, 375, 64)  # 2 blocks + the output, 5 s at 75 Hz
    for i in range(3):
        one = hear.get_timestamp_embeddings(audio, hear.load_model(str(debug_checkpoint), layer=i - 3))[0]
        assert torch.allclose(emb[:, i], one, atol=1e-5)
    assert hear.get_scene_embeddings(audio, every).shape == (2, 3, 64)
    with pytest.raises(ValueError, match="layer must be"):
        hear.load_model(str(debug_checkpoint), layer="last")

import numpy as np
import pytest
import torch

from earthcrafter.features.extractors import FeaturesConfig, TinyAEExtractor, TinyAEExtractorConfig, build_extractor
from earthcrafter.features.tiny_ae import TinyAE, TinyAEConfig, TinyAETrainConfig, load_tiny_ae, save_tiny_ae, train_tiny_ae

FAST = TinyAETrainConfig(steps=60, batch_size=8, crop=32, lr=2e-3, val_crops=16)


@pytest.fixture(scope="module")
def trained(toy_scene):
    return train_tiny_ae(toy_scene.frames, FAST, TinyAEConfig(width=32))


def test_tiny_ae_trains_and_psnr_improves(trained):
    model, m = trained
    assert m["steps"] == 60 and m["num_frames"] == 9
    assert m["loss_last"] < 0.6 * m["loss_first"]
    assert m["psnr_after"] > m["psnr_before"] + 5.0
    assert m["psnr_after"] > 18.0


def test_tiny_ae_latent_is_16_channels_at_one_eighth():
    z = TinyAE(TinyAEConfig(width=8)).encode(torch.zeros(2, 3, 48, 64))
    assert z.shape == (2, 16, 6, 8)


def test_save_load_round_trip_is_exact_and_atomic(trained, tmp_path, toy_scene):
    model, _ = trained
    path = tmp_path / "models" / "tiny_ae.pt"
    save_tiny_ae(path, model)
    assert sorted(p.name for p in path.parent.iterdir()) == ["tiny_ae.pt"]  # no temp files left
    loaded = load_tiny_ae(path)
    assert loaded.cfg == model.cfg
    img = toy_scene.frames[3].rgb
    a = TinyAEExtractor(model)(img)
    b = build_extractor(FeaturesConfig(tiny_ae=TinyAEExtractorConfig(weights_path=path)))(img)
    assert a.shape == (128, 128, 48)
    np.testing.assert_array_equal(a, b)


def test_load_rejects_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_tiny_ae(tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt"):
        load_tiny_ae(junk)
    other = tmp_path / "other.pt"
    torch.save({"format": "something/else"}, other)
    with pytest.raises(ValueError, match="field 'format'"):
        load_tiny_ae(other)
    mismatched = tmp_path / "mismatch.pt"
    torch.save({"format": "earthcrafter.tiny_ae/1", "config": {"width": 8}, "state_dict": TinyAE(TinyAEConfig(width=4)).state_dict()}, mismatched)
    with pytest.raises(ValueError, match="field 'state_dict'"):
        load_tiny_ae(mismatched)


def test_training_input_validation():
    with pytest.raises(ValueError, match="no frames"):
        train_tiny_ae([], FAST)
    with pytest.raises(ValueError, match="smaller than crop"):
        train_tiny_ae([np.zeros((16, 16, 3), np.uint8)], FAST)
    with pytest.raises(ValueError, match="multiple of 8"):
        train_tiny_ae([np.zeros((64, 64, 3), np.uint8)], TinyAETrainConfig(crop=30))


def test_training_threads_are_restored(toy_scene):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        train_tiny_ae(toy_scene.frames[:1], TinyAETrainConfig(steps=2, batch_size=2, crop=16, val_crops=2, num_threads=1))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)

"""bg.load_weights: the checkpoint layouts found in the wild, mismatches, and hostile files."""

import os
import pickle
import warnings

import pytest
import torch
import torchvision
from torch import nn

import boundgeo as bg


def _small() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))


def _fresh_like(model: nn.Module) -> nn.Module:
    other = type(model)() if not isinstance(model, nn.Sequential) else _small()
    with torch.no_grad():  # make sure nothing matches by accident
        for p in other.parameters():
            p.fill_(0.5)
    return other


def _same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _trained_small() -> nn.Module:
    model = _small()
    model(torch.rand(8, 1, 8, 8))  # train-mode forward: BatchNorm running stats move off 0/1
    return model


def _prefixed(sd: dict, prefix: str) -> dict:
    return {prefix + k: v for k, v in sd.items()}


LAYOUTS = {
    "bare": lambda sd: sd,
    "lightning": lambda sd: {"state_dict": _prefixed(sd, "model."), "epoch": 3,
                             "global_step": 120, "pytorch-lightning_version": "2.4.0"},
    "lightning_bare_keys": lambda sd: {"state_dict": sd, "epoch": 3},
    "model": lambda sd: {"model": sd, "optimizer": {"state": {}, "param_groups": []}, "epoch": 9},
    "net": lambda sd: {"net": _prefixed(sd, "module."), "acc": 95.1, "epoch": 200},
    "model_state_dict": lambda sd: {"model_state_dict": sd, "loss": 0.3},
    "dataparallel": lambda sd: _prefixed(sd, "module."),
    "compiled": lambda sd: _prefixed(sd, "_orig_mod."),
    "ddp_of_compiled": lambda sd: _prefixed(sd, "module._orig_mod."),
    "lightning_ddp": lambda sd: {"state_dict": _prefixed(sd, "model.module.")},
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_layout_loads_a_small_model(tmp_path, layout):
    source = _trained_small()
    path = tmp_path / "weights.pt"
    torch.save(LAYOUTS[layout](source.state_dict()), path)
    target = _fresh_like(source)
    assert not _same(target, source)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # none of these layouts needs a warning
        assert bg.load_weights(target, path) is target
    assert _same(target, source)


@pytest.mark.parametrize("layout", ["bare", "lightning", "net", "dataparallel", "compiled"])
def test_resnet18_layouts(tmp_path, layout):
    source = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(LAYOUTS[layout](source.state_dict()), path)
    target = torchvision.models.resnet18(weights=None)
    assert not _same(target, source)
    bg.load_weights(target, str(path))
    assert _same(target, source)
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(target.eval()(x), source.eval()(x))


def test_lightning_module_with_other_attributes_loads_the_model_part(tmp_path):
    source = _trained_small()
    state = _prefixed(source.state_dict(), "model.")
    state["criterion.weight"] = torch.ones(10)  # e.g. a weighted loss's buffer
    torch.save({"state_dict": state}, tmp_path / "last.ckpt")
    target = _fresh_like(source)
    with pytest.warns(UserWarning, match=r"under 'model\.'; left out 1 others: criterion\.weight"):
        bg.load_weights(target, tmp_path / "last.ckpt")
    assert _same(target, source)


def test_a_sequential_index_is_never_taken_for_a_prefix_to_strip(tmp_path):
    """A checkpoint of Sequential(Sequential(L, L), L) has most keys under "0.": stripping it
    would load the inner block into a user's Sequential(L, L) and drop the real layer "1."."""
    torch.manual_seed(0)
    inner = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    torch.save(nn.Sequential(inner, nn.Linear(4, 4)).state_dict(), tmp_path / "nested.pt")
    target = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(bg.BoundgeoError, match="missing from the file"):
        bg.load_weights(target, tmp_path / "nested.pt")
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())  # nothing loaded


def test_a_list_of_state_dicts_takes_the_first_with_a_warning(tmp_path):
    first, second = _trained_small(), _fresh_like(_small())
    torch.save([first.state_dict(), second.state_dict()], tmp_path / "ensemble.pt")
    target = _fresh_like(_small())
    with pytest.warns(UserWarning, match="list of 2 entries; loading the first"):
        bg.load_weights(target, tmp_path / "ensemble.pt")
    assert _same(target, first)


def test_a_prefix_shared_by_few_keys_is_not_stripped(tmp_path):
    # resnet18's "fc." keys would match a Linear(512, 1000): only a prefix most keys share goes
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r.pth")
    with pytest.raises(bg.BoundgeoError, match=r"missing from the file \(2\): weight, bias"):
        bg.load_weights(nn.Linear(512, 1000), tmp_path / "r.pth")


def test_mismatch_lists_missing_unexpected_and_shapes(tmp_path):
    state = _small().state_dict()
    state["3.weight"] = torch.zeros(5, 144)  # shape mismatch
    del state["1.running_var"]  # missing
    state["extra.bias"] = torch.zeros(3)  # unexpected
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(bg.BoundgeoError) as info:
        bg.load_weights(_small(), tmp_path / "w.pt")
    message = str(info.value)
    assert "w.pt" in message and "missing from the file (1): 1.running_var" in message
    assert "unexpected in the file (1): extra.bias" in message
    assert "3.weight: file (5, 144) vs model (10, 144)" in message
    # strict=False allows missing and unexpected keys, never a shape mismatch
    with pytest.raises(bg.BoundgeoError, match=r"shape mismatch \(1\): 3\.weight") as info:
        bg.load_weights(_small(), tmp_path / "w.pt", strict=False)
    assert "running_var" not in str(info.value)
    state["3.weight"] = torch.full((10, 144), 0.25)
    torch.save(state, tmp_path / "w.pt")
    model = bg.load_weights(_small(), tmp_path / "w.pt", strict=False)
    assert torch.equal(model[3].weight, state["3.weight"])


def test_resnet_mismatch_names_keys(tmp_path):
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(bg.BoundgeoError, match=r"missing from the file \(\d+\): layer1\.2\.conv1\.weight"):
        bg.load_weights(torchvision.models.resnet34(weights=None), tmp_path / "r18.pth")
    head = torchvision.models.resnet18(weights=None, num_classes=10)
    with pytest.raises(bg.BoundgeoError, match=r"fc\.weight: file \(1000, 512\) vs model \(10, 512\)"):
        bg.load_weights(head, tmp_path / "r18.pth")


class _Marker:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_hostile_pickle_is_refused_and_never_runs(tmp_path, writer):
    marker = tmp_path / "pwned"
    payload = {"state_dict": _small().state_dict(), "hook": _Marker(marker)}
    path = tmp_path / "evil.pt"
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as handle:
            pickle.dump(payload, handle, protocol=2)
    with pytest.raises(bg.BoundgeoError, match=r"evil\.pt holds code or objects beyond tensors.*NOT loaded"):
        bg.load_weights(_small(), path)
    assert not marker.exists()
    # the payload is live: an unsafe load of the same file would have run it
    if writer == "torch.save":
        torch.load(path, weights_only=False)
    else:
        pickle.loads(path.read_bytes())
    assert marker.exists()


def test_a_pickled_whole_model_is_refused(tmp_path):
    torch.save(_small(), tmp_path / "whole.pt")
    with pytest.raises(bg.BoundgeoError, match=r"beyond tensors .*Sequential.*NOT loaded"):
        bg.load_weights(_small(), tmp_path / "whole.pt")


def test_unreadable_files_name_the_path(tmp_path):
    with pytest.raises(bg.BoundgeoError, match=r"missing\.pt does not exist"):
        bg.load_weights(_small(), tmp_path / "missing.pt")
    with pytest.raises(bg.BoundgeoError, match="is not a file"):
        bg.load_weights(_small(), tmp_path)
    torch.save(_small().state_dict(), tmp_path / "whole.pt")
    data = (tmp_path / "whole.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "text.pt").write_text("these are not weights")
    torch.save(_small().state_dict(), tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    legacy = (tmp_path / "legacy.pt").read_bytes()
    (tmp_path / "legacy_cut.pt").write_bytes(legacy[: len(legacy) - 40])
    for name in ("cut.pt", "empty.pt", "text.pt", "legacy_cut.pt"):
        with pytest.raises(bg.BoundgeoError, match=rf"{name} is not a readable PyTorch checkpoint"):
            bg.load_weights(_small(), tmp_path / name)


def test_a_file_without_a_state_dict_is_named(tmp_path):
    for i, content in enumerate(({"epoch": 3, "acc": 0.9}, torch.zeros(3), [], {"model": {"epoch": 1}})):
        torch.save(content, tmp_path / f"c{i}.pt")
        with pytest.raises(bg.BoundgeoError, match=rf"c{i}\.pt holds no state dict"):
            bg.load_weights(_small(), tmp_path / f"c{i}.pt")


def test_nan_weights_and_bad_model_are_refused(tmp_path):
    state = _small().state_dict()
    state["0.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pt")
    with pytest.raises(bg.BoundgeoError, match=r"NaN in \['0\.weight'\]"):
        bg.load_weights(_small(), tmp_path / "nan.pt")
    with pytest.raises(bg.BoundgeoError, match="torch.nn.Module"):
        bg.load_weights(state, tmp_path / "nan.pt")


def test_weights_follow_the_model_dtype_and_load_on_cpu(tmp_path):
    source = _trained_small().double()
    torch.save(source.state_dict(), tmp_path / "f64.pt")
    target = bg.load_weights(_small(), tmp_path / "f64.pt")
    assert target[0].weight.dtype == torch.float32
    torch.testing.assert_close(target[0].weight, source[0].weight.float())


def test_a_batchnorm_checkpoint_without_its_step_counter_loads(tmp_path):
    """Checkpoints saved before torch 0.4.1 have no num_batches_tracked; torch fills it in."""
    torch.manual_seed(0)
    source = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    source.train()(torch.randn(8, 4))  # running statistics that differ from a fresh layer's
    state = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old.pt")
    target = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    bg.load_weights(target, tmp_path / "old.pt")
    x = torch.randn(3, 4)
    torch.testing.assert_close(target.eval()(x), source.eval()(x))
    state.pop("1.running_mean")  # a real entry missing is still refused
    torch.save(state, tmp_path / "broken.pt")
    with pytest.raises(bg.BoundgeoError, match=r"missing from the file \(1\): 1\.running_mean"):
        bg.load_weights(nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)), tmp_path / "broken.pt")

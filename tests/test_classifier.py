import numpy as np
import pytest
import torch
from torch import nn

import boundgeo as bg


def _cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 7)).eval()


def test_normalisation_inside_equals_by_hand():
    model = _cnn()
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    clf = bg.Classifier(model, mean=mean, std=std)
    x = torch.rand(5, 3, 6, 6)
    by_hand = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = model(by_hand)
    torch.testing.assert_close(clf.logits(x), expected)


def test_normalisation_broadcasts_over_flat_inputs():
    model = nn.Linear(12, 3).eval()
    clf = bg.Classifier(model, mean=[0.1, 0.2, 0.3], std=[0.5, 0.5, 0.5])
    x = torch.rand(4, 12)
    by_hand = (x - torch.tensor([0.1, 0.2, 0.3]).repeat_interleave(4)) / 0.5
    with torch.no_grad():
        torch.testing.assert_close(clf.logits(x), model(by_hand))
    per_feature = torch.rand(12)
    clf2 = bg.Classifier(model, mean=per_feature)
    with torch.no_grad():
        torch.testing.assert_close(clf2.logits(x), model(x - per_feature))


def test_batched_predict_equals_single_pass():
    model = _cnn()
    clf = bg.Classifier(model)
    x = torch.rand(37, 3, 6, 6)
    with torch.no_grad():
        single = model(x).argmax(1)
    assert torch.equal(clf.predict(x, batch_size=5), single)
    assert torch.equal(clf.predict(x, batch_size=1), single)
    torch.testing.assert_close(clf.logits(x, batch_size=4), clf.logits(x, batch_size=100))


def test_num_classes_inferred():
    assert bg.Classifier(_cnn()).num_classes == 7

    class NoLinear(nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :4]

    clf = bg.Classifier(NoLinear().eval())
    with pytest.raises(bg.BoundgeoError, match="num_classes"):
        clf.num_classes
    clf.logits(torch.rand(2, 8))
    assert clf.num_classes == 4


def test_device_follows_model():
    clf = bg.Classifier(_cnn())
    assert clf.device == torch.device("cpu")
    assert clf.logits(np.random.rand(2, 3, 6, 6).astype(np.float32)).device == clf.device
    meta = bg.Classifier(nn.Linear(3, 2).to("meta").eval())
    assert meta.device.type == "meta"  # never moved to another device behind the user's back
    if torch.cuda.is_available():
        cuda = bg.Classifier(_cnn().cuda())
        assert cuda.predict(torch.rand(2, 3, 6, 6)).device.type == "cuda"


def test_training_mode_warns_and_switches_to_eval():
    model = nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.5)).train()
    with pytest.warns(UserWarning, match="eval mode"):
        clf = bg.Classifier(model)
    assert not clf.model.training
    x = torch.rand(8, 4)
    torch.testing.assert_close(clf.logits(x), clf.logits(x))  # dropout is off


@pytest.mark.parametrize(
    "x, match",
    [
        (torch.full((2, 3, 6, 6), float("nan")), "NaN"),
        (torch.full((2, 3, 6, 6), float("inf")), "NaN or Inf"),
        (torch.full((2, 3, 6, 6), 1.5), r"outside the bounds \(0.0, 1.0\)"),
        (torch.full((2, 3, 6, 6), -0.2), r"\[-0.2"),
        (torch.rand(2, 3, 9, 9), r"rejected inputs of shape \(2, 3, 9, 9\)"),
        (torch.rand(0, 3, 6, 6), r"\(0, 3, 6, 6\)"),
    ],
)
def test_bad_inputs_raise(x, match):
    clf = bg.Classifier(_cnn())
    with pytest.raises(bg.BoundgeoError, match=match):
        clf.predict(x)


def test_non_2d_logits_raise():
    class Bad(nn.Module):
        def forward(self, x):
            return x  # (n, 3, 6, 6): not logits

    with pytest.raises(bg.BoundgeoError, match=r"returned \(2, 3, 6, 6\)"):
        bg.Classifier(Bad().eval()).logits(torch.rand(2, 3, 6, 6))


def test_fewer_than_two_classes_raise():
    with pytest.raises(bg.BoundgeoError, match="at least 2 classes, got 1"):
        bg.Classifier(nn.Linear(4, 1).eval())
    with pytest.raises(bg.BoundgeoError, match="at least 2 classes, got 1"):
        bg.Classifier(nn.Identity().eval(), num_classes=1)

    class One(nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :1]

    with pytest.raises(bg.BoundgeoError, match="got 1"):
        bg.Classifier(One().eval()).logits(torch.rand(3, 5))


def test_bad_settings_raise():
    with pytest.raises(bg.BoundgeoError, match="bounds"):
        bg.Classifier(_cnn(), bounds=(1.0, 0.0))
    with pytest.raises(bg.BoundgeoError, match="std must be positive"):
        bg.Classifier(_cnn(), std=[1.0, 0.0, 1.0])
    with pytest.raises(bg.BoundgeoError, match="does not broadcast"):
        bg.Classifier(_cnn(), mean=[0.1, 0.2]).logits(torch.rand(2, 3, 6, 6))
    with pytest.raises(bg.BoundgeoError, match="nn.Module"):
        bg.Classifier(lambda x: x)

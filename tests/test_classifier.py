import math
import warnings

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


# ------------------------------------------------------------------ outputs: logits or probabilities
@pytest.fixture(scope="module")
def softmax_digits():
    """The shipped digits CNN, and the same network with a softmax as its last layer."""
    trained = bg.zoo.pretrained_digits_cnn()
    x, _ = bg.load_dataset("digits", split="test")
    return trained.model, nn.Sequential(trained.model, nn.Softmax(dim=1)).eval(), x[:60]


def test_probabilities_are_detected_on_the_first_forward(softmax_digits):
    _, softmax, x = softmax_digits
    with pytest.raises(bg.BoundgeoError, match=r"look like probabilities.*outputs='probabilities'"):
        bg.deepfool(bg.Classifier(softmax), x)
    with pytest.raises(bg.BoundgeoError, match="look like probabilities"):
        bg.Classifier(softmax).predict(x[:1])


def test_probabilities_option_gives_the_logits_margins(softmax_digits):
    logits_model, softmax, x = softmax_digits
    on_logits = bg.deepfool(bg.Classifier(logits_model), x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no probability underflows here (gaps up to 36): nothing to report
        on_probs = bg.deepfool(bg.Classifier(softmax, outputs="probabilities"), x)
    assert on_logits.converged.all() and on_probs.converged.all()
    assert torch.equal(on_logits.label, on_probs.label) and torch.equal(on_logits.target, on_probs.target)
    torch.testing.assert_close(on_probs.margin, on_logits.margin, rtol=1e-3, atol=1e-3)
    # declaring the outputs logits skips the check, and gives the inflated margins it guards against
    inflated = bg.deepfool(bg.Classifier(softmax, outputs="logits"), x)
    assert float(inflated.margin.median()) > 3 * float(on_logits.margin.median())


def test_saturated_probabilities_are_reported_not_measured():
    """A softmax whose smaller probabilities underflow to 0 (logit gaps beyond ~104 in float32)
    has no gradient left to follow: log(max(p, tiny)) is flat there. DeepFool must then say so
    (status "zero_gradient", not converged) instead of returning a margin; the same network's
    logits still give every margin."""
    torch.manual_seed(0)
    linear = nn.Linear(4, 3)
    with torch.no_grad():
        linear.weight.mul_(30000.0)
        linear.bias.mul_(30000.0)
    softmax = nn.Sequential(linear, nn.Softmax(dim=1)).eval()
    x = torch.rand(8, 4, generator=torch.Generator().manual_seed(1))
    probabilities = softmax(x)
    assert (probabilities == 0).any(1).all()  # every row has underflowed classes
    on_logits = bg.deepfool(bg.Classifier(linear.eval(), outputs="logits"), x, progress=False)
    with pytest.warns(RuntimeWarning, match="8 of 8 inputs have class probabilities below"):
        on_probs = bg.deepfool(bg.Classifier(softmax, outputs="probabilities"), x, progress=False)
    assert on_logits.converged.all() and (on_logits.margin > 0).all()
    saturated = (probabilities.max(1).values == 1.0) & (probabilities == 0).any(1)
    assert saturated.any()
    assert not on_probs.converged[saturated].any()
    assert set(on_probs.to_frame()["status"][saturated.numpy()]) == {"zero_gradient"}


def _softmax_of(logits: list[float], dtype: torch.dtype = torch.float32) -> nn.Module:
    """A softmax model whose logits are ``logits`` at every input (two features, ignored)."""
    linear = nn.Linear(2, len(logits))
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.copy_(torch.tensor(logits))
    return nn.Sequential(linear, nn.Softmax(dim=1)).eval().to(dtype)


def test_underflowed_probabilities_are_reported_once():
    """A class 100 logits below the label has probability 0 in float32: log(max(p, tiny)) flattens
    it (zero gradient, gap understated as 87.3), and the user is told once per Classifier."""
    clf = bg.Classifier(_softmax_of([0.0, -1.0, -100.0]), outputs="probabilities")
    with pytest.warns(RuntimeWarning, match=r"^5 of 5 inputs have class probabilities below 1.18e-38, the "
                                            r"smallest normal float32 number \(a logit gap beyond 87.3\)"):
        log_p = clf.logits(torch.zeros(5, 2))
    assert torch.allclose(log_p[:, 2], torch.full((5,), math.log(torch.finfo(torch.float32).tiny)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # reported already: not on every forward
        clf.logits(torch.zeros(3, 2))
        # a gap of 80 is still a normal float32 probability: exact, nothing to report
        fine = bg.Classifier(_softmax_of([0.0, -1.0, -80.0]), outputs="probabilities").logits(torch.zeros(2, 2))
    torch.testing.assert_close(fine[:, 2] - fine[:, 0], torch.full((2,), -80.0), rtol=1e-4, atol=1e-3)


def test_the_underflow_threshold_is_the_dtypes():
    """float16's smallest normal number is 6.1e-5: a gap of 12 underflows there, not in float32."""
    x = torch.zeros(2, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bg.Classifier(_softmax_of([0.0, -12.0]), outputs="probabilities").logits(x)
    half = bg.Classifier(_softmax_of([0.0, -12.0], torch.float16), outputs="probabilities")
    with pytest.warns(RuntimeWarning, match=r"^2 of 2 inputs .* below 6.1e-05, the smallest normal float16 number "
                                            r"\(a logit gap beyond 9.7\)"):
        half.logits(x.half())


def test_the_logits_path_makes_no_underflow_check():
    """Logits far below the others are no probabilities: with outputs='logits' or 'auto' nothing
    is clamped or reported."""
    linear = nn.Linear(2, 3)
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.copy_(torch.tensor([0.0, -1.0, -2.0**100]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for outputs in ("auto", "logits"):
            out = bg.Classifier(linear.eval(), outputs=outputs).logits(torch.zeros(2, 2))
            assert float(out[0, 2]) == -2.0**100  # unclamped, as the model gave it


def test_probabilities_option_refuses_logits(softmax_digits):
    logits_model, _, x = softmax_digits
    with pytest.raises(bg.BoundgeoError, match="outputs='probabilities', but"):
        bg.Classifier(logits_model, outputs="probabilities").logits(x)
    with pytest.raises(bg.BoundgeoError, match="outputs must be one of"):
        bg.Classifier(logits_model, outputs="softmax")


def test_outputs_are_checked_once():
    class Counting(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 3)
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            return self.linear(x)

    clf = bg.Classifier(Counting().eval())
    clf.logits(torch.rand(5, 4))
    assert clf._outputs_checked
    # a later batch whose outputs happen to look like probabilities is not re-examined
    with torch.no_grad():
        clf.model.linear.weight.zero_()
        clf.model.linear.bias.copy_(torch.tensor([0.2, 0.3, 0.5]))
    assert clf.logits(torch.rand(5, 4)).shape == (5, 3)
    with pytest.raises(bg.BoundgeoError, match="look like probabilities"):
        bg.Classifier(clf.model).logits(torch.rand(5, 4))


def test_nan_logits_raise_a_boundgeo_error():
    model = nn.Linear(4, 3).eval()
    with torch.no_grad():
        model.weight[1, 0] = float("nan")
    clf = bg.Classifier(model, bounds=(-1, 1))
    with pytest.raises(bg.BoundgeoError, match=r"NaN or Inf outputs for 4 of 4"):
        bg.deepfool(clf, torch.rand(4, 4))  # an AssertionError in DeepFool before
    with pytest.raises(bg.BoundgeoError, match="NaN or Inf outputs"):
        clf.predict(torch.rand(4, 4))


# ------------------------------------------------------------------ settings
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"bounds": "ab"}, r"bounds must be \(low, high\) with low < high, got 'ab'"),
        ({"bounds": ("a", 1.0)}, r"bounds\[0\] \(low\) must be a finite real number, got 'a'"),
        ({"bounds": (0.0, float("inf"))}, "bounds.*finite"),
        ({"bounds": (0.0, 1.0, 2.0)}, "bounds must be"),
        ({"bounds": 1.0}, "bounds must be"),
        ({"mean": "abc"}, "mean must be a number"),
        ({"num_classes": 2.5}, "num_classes must be a whole number"),
        ({"device": "bogus"}, "device 'bogus' is not a torch device"),
        ({"device": "mps"}, "not available"),
    ],
)
def test_bad_classifier_settings_raise(kwargs, match):
    with pytest.raises(bg.BoundgeoError, match=match):
        bg.Classifier(_cnn(), **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_unavailable_cuda_is_refused():
    with pytest.raises(bg.BoundgeoError, match="CUDA is not available"):
        bg.Classifier(_cnn(), device="cuda")


@pytest.mark.parametrize("batch_size", [0, 2.5, "8"])
def test_bad_batch_size_raises(batch_size):
    with pytest.raises(bg.BoundgeoError, match="batch_size"):
        bg.Classifier(_cnn()).predict(torch.rand(2, 3, 6, 6), batch_size=batch_size)


# ------------------------------------------------------------------ as_classifier
def test_as_classifier_wraps_a_module_with_a_warning():
    from boundgeo.classifier import as_classifier

    clf = bg.Classifier(_cnn())
    assert as_classifier(clf) is clf
    with pytest.warns(UserWarning, match=r"assumes bounds \(0, 1\) and no normalisation"):
        wrapped = as_classifier(_cnn())
    assert isinstance(wrapped, bg.Classifier) and wrapped.bounds == (0.0, 1.0) and wrapped.mean is None
    with pytest.raises(bg.BoundgeoError, match="clf must be a boundgeo.Classifier or a torch.nn.Module, got str"):
        as_classifier("model")

"""Few-shot methods: values by hand, exact reductions to zero-shot, and accuracy on clusters that a method
must beat chance on by a margin; the anchored probe stays at or above zero-shot at 1-2 shots."""

from __future__ import annotations

import statistics

import pytest
import torch
import torch.nn.functional as F

from clipforge.evaluate.anchored import ZEROSHOT, AnchoredConfig, class_strengths, fit_anchored_probe
from clipforge.evaluate.fewshot import (
    DEFAULT_METHODS,
    FewShotConfig,
    Support,
    fewshot_curve,
    fewshot_rows,
    plot_fewshot,
    run_method,
    sample_shots,
)
from clipforge.evaluate.linear_probe import lambda_grid, search_lambda_cv
from clipforge.evaluate.prototype_probe import (
    PrototypeProbeConfig,
    clap_multipliers,
    fit_clap,
    fit_zs_lp,
    train_prototypes,
)
from clipforge.evaluate.support import can_cross_validate, cross_validate, one_se_choice, shot_folds
from clipforge.evaluate.tip_adapter import (
    PAPER_ALPHA,
    PAPER_BETA,
    TipConfig,
    fit_tip_adapter,
    fit_tip_adapter_f,
    tip_logits,
)


def accuracy(logits, y) -> float:
    return float((logits.argmax(-1) == y).float().mean())


def clusters(num_classes=10, dim=32, sigma=1.0, tau=1.0, train=30, test=60, seed=0):
    """Gaussian classes on the sphere; 'zero-shot' prototypes = class means plus noise of scale tau."""
    g = torch.Generator().manual_seed(seed)
    mu = F.normalize(torch.randn(num_classes, dim, generator=g), dim=-1)

    def draw(per_class):
        y = torch.arange(num_classes).repeat_interleave(per_class)
        return F.normalize(mu[y] + 3 * sigma * torch.randn(len(y), dim, generator=g) / dim**0.5, dim=-1), y

    w0 = F.normalize(mu + 3 * tau * torch.randn(num_classes, dim, generator=g) / dim**0.5, dim=-1).T
    return draw(train), draw(test), w0.contiguous()


def test_support_folds_by_hand():
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    torch.testing.assert_close(shot_folds(y, 4), torch.tensor([0, 0, 1, 1, 2, 2]))
    torch.testing.assert_close(shot_folds(torch.tensor([2, 0, 1]), 4), torch.tensor([0, 1, 2]))  # one shot
    torch.testing.assert_close(shot_folds(torch.arange(6), 4), torch.tensor([0, 1, 2, 3, 0, 1]))
    assert can_cross_validate(y) and not can_cross_validate(torch.tensor([0, 1, 1]))
    # cross_validate puts each fold's held-out score in its examples' places.
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    scores = cross_validate(y, ["a"], lambda kept, held, cands: [x[held] * 10], 4)
    torch.testing.assert_close(scores["a"].correct, torch.tensor([True, True, True, False, True, True]))
    assert scores["a"].accuracy == pytest.approx(5 / 6)


def test_one_se_rule_keeps_the_simplest_within_one_se():
    class Score:
        def __init__(self, loss, se):
            self.mean_loss, self.loss_se = loss, se

    scores = {"simple": Score(1.05, 0.2), "mid": Score(1.0, 0.1), "complex": Score(0.9, 0.1)}
    assert one_se_choice(scores) == "mid"  # 1.0 <= 0.9 + 0.1; 1.05 is not
    scores["complex"] = Score(0.9, 0.2)
    assert one_se_choice(scores) == "simple"


def test_tip_adapter_by_hand_and_alpha_zero_is_zeroshot_exactly():
    x = F.normalize(torch.tensor([[1.0, 0.1], [0.9, -0.2], [0.2, 1.0], [1.0, 0.3]]), dim=-1)
    y = torch.tensor([0, 0, 1, 1])
    w0 = torch.eye(2)
    q = F.normalize(torch.tensor([[0.5, 0.5], [1.0, -1.0]]), dim=-1)
    values = F.one_hot(y, 2).float()
    expected = 50 * q @ w0 + 2.0 * 0.5 * torch.exp(-5.5 * (1 - q @ x.T)) @ values  # s/100 = 0.5
    torch.testing.assert_close(tip_logits(q, x, values, w0, 50.0, 2.0, 5.5), expected)
    assert torch.equal(tip_logits(q, x, values, w0, 50.0, 0.0, 5.5), 50.0 * q @ w0)
    # An adapter whose only alpha candidate is 0 predicts exactly as zero-shot, fine-tuned or not.
    (sx, sy), (tx, _), w0 = clusters()
    idx = sample_shots(sy, 4, 0)
    config = TipConfig(alphas=(0.0,))
    for fit in (fit_tip_adapter, fit_tip_adapter_f):
        adapter = fit(sx[idx], sy[idx], w0, 30.0, config)
        assert adapter.alpha == 0 and torch.equal(adapter.logits(tx), 30.0 * tx @ w0)
    # One shot: nothing to cross-validate on, the paper's defaults.
    idx = sample_shots(sy, 1, 0)
    adapter = fit_tip_adapter(sx[idx], sy[idx], w0, 30.0)
    assert (adapter.alpha, adapter.beta, adapter.cv) == (PAPER_ALPHA, PAPER_BETA, {})


def test_tip_adapter_f_moves_keys_and_keeps_them_unit():
    (sx, sy), _, w0 = clusters(seed=1)
    idx = sample_shots(sy, 4, 0)
    plain = fit_tip_adapter(sx[idx], sy[idx], w0, 30.0)
    tuned = fit_tip_adapter_f(sx[idx], sy[idx], w0, 30.0, seed=0)
    assert (tuned.alpha, tuned.beta) == (plain.alpha, plain.beta) and plain.alpha > 0
    assert 1e-4 < float((tuned.keys - plain.keys).abs().max()) < 0.5
    torch.testing.assert_close(tuned.keys.norm(dim=-1), torch.ones(len(idx)))


def test_prototype_probes_by_hand():
    (sx, sy), (tx, _), w0 = clusters(seed=2)
    idx = sample_shots(sy, 4, 0)
    x, y = sx[idx], sy[idx]
    # Zero steps = the zero-shot prototypes; ZS-LP whose only candidate is 0 steps is zero-shot.
    (same,) = train_prototypes(x, y, w0, 30.0, 0.01, [0])
    assert torch.equal(same, w0)
    probe = fit_zs_lp(x, y, w0, 30.0, PrototypeProbeConfig(steps=(0,)))
    assert probe.steps == 0
    torch.testing.assert_close(probe.logits(tx), 30.0 * tx @ w0)
    # CLAP's multipliers: the mean zero-shot probability of each class on its own support images.
    probs = (30.0 * x @ w0).softmax(-1)
    expected = torch.stack([probs[y == c, c].mean() for c in range(w0.shape[1])])
    torch.testing.assert_close(clap_multipliers(x, y, w0, 30.0), expected)
    # The penalty holds CLAP nearer W0 than the unpenalised probe after the same steps.
    clap = fit_clap(x, y, w0, 30.0)
    (free,) = train_prototypes(x, y, w0, 30.0, 0.01, [clap.steps])
    assert (clap.weight - w0).norm() < 0.9 * (free - w0).norm()


def test_probe_lambda_by_support_cross_validation():
    (sx, sy), _, _ = clusters(seed=3)
    one = sample_shots(sy, 1, 0)
    assert search_lambda_cv(sx[one], sy[one], 10) == (lambda_grid()[-1], {})  # one shot: class means
    four = sample_shots(sy, 4, 0)
    lam, scores = search_lambda_cv(sx[four], sy[four], 10)
    assert lam in scores and scores[lam] == max(scores.values()) and 4 <= len(scores) <= 15


@pytest.mark.parametrize("method", DEFAULT_METHODS)
def test_every_method_beats_chance_on_separable_clusters(method):
    """10 well-separated classes, weak zero-shot prototypes: at 8 shots every method is far above chance
    (0.10) and beats zero-shot."""
    (sx, sy), (tx, ty), w0 = clusters(sigma=0.6, tau=1.2, seed=4)
    zeroshot = accuracy(30.0 * tx @ w0, ty)
    assert 0.3 < zeroshot < 0.9
    idx = sample_shots(sy, 8, 0)
    result = run_method(method, Support(sx[idx], sy[idx], w0, 30.0, 0), (tx, ty), FewShotConfig())
    assert result["acc1"] > 0.6, result
    assert result["acc1"] > zeroshot + 0.05, (result, zeroshot)


def anchored_mean(x, y, xt, yt, w0, k, seeds=(0, 1, 2)):
    accs = []
    for seed in seeds:
        idx = sample_shots(y, k, seed)
        probe = fit_anchored_probe(x[idx], y[idx], w0, 100.0)
        accs.append(accuracy(probe.logits(xt), yt))
    return statistics.fmean(accs)


@pytest.mark.parametrize(
    "sigma,tau",
    [
        pytest.param(1.0, 0.3, marks=pytest.mark.slow),
        pytest.param(1.0, 0.8, marks=pytest.mark.slow),
        (1.5, 0.5),
        (0.7, 1.5),
    ],
)
def test_anchored_not_below_zeroshot_on_clusters(sigma, tau):
    """20 classes; zero-shot prototypes good (small tau) or poor (large tau): never below at 1-2 shots."""
    (x, y), (xt, yt), w0 = clusters(num_classes=20, dim=64, sigma=sigma, tau=tau, train=40, test=200)
    zeroshot = accuracy(xt @ w0, yt)
    for k in (1, 2):
        assert anchored_mean(x, y, xt, yt, w0, k) >= zeroshot, k


def test_anchored_by_hand():
    x = F.normalize(torch.tensor([[1.0, 0.1], [0.9, -0.2], [0.2, 1.0], [1.0, 0.3]]), dim=-1)
    y = torch.tensor([0, 0, 1, 1])
    # class 0: 2/2 right -> (2+1)/(2+2); class 1: 1/2 right -> (1+1)/(2+2)
    torch.testing.assert_close(class_strengths(x, y, torch.eye(2), 100.0), torch.tensor([0.75, 0.5]))
    # Zero-shot prototypes that point at the wrong class: cross-validation must let the data move them.
    g = torch.Generator().manual_seed(0)
    mu = torch.eye(4)[:, :2].T
    y = torch.arange(2).repeat(8)
    x = F.normalize(mu[y] + 0.1 * torch.randn(16, 4, generator=g), dim=-1)
    w0 = F.normalize(torch.tensor([[0.2, 1.0], [1.0, 0.2], [0.0, 0.0], [0.0, 0.0]]), dim=0)  # swapped
    probe = fit_anchored_probe(x, y, w0, 10.0)
    assert probe.penalty < ZEROSHOT and accuracy(probe.logits(x), y) == 1.0
    fixed = fit_anchored_probe(x, y, w0, 10.0, AnchoredConfig(), penalty=1e6)  # no search; stays at W0
    assert fixed.cv_loss == {} and (fixed.weight - w0).abs().max() < 1e-3


def test_fewshot_curve_rows_and_plot(tmp_path):
    (x, y), (xt, yt), w0 = clusters(seed=5)
    config = FewShotConfig(shots=(1, 4), seeds=(0, 1), methods=("anchored", "tip_adapter"))
    result = fewshot_curve((x, y), (xt, yt), w0, 30.0, config, progress=False)
    assert len(result["rows"]) == 4 and all(len(r["acc1_per_seed"]) == 2 for r in result["rows"])
    row = next(r for r in result["rows"] if r["method"] == "tip_adapter" and r["shots"] == 1)
    assert row["chosen_per_seed"] == [{"alpha": PAPER_ALPHA, "beta": PAPER_BETA}] * 2
    table = fewshot_rows(result)
    assert table[0]["method"] == "zeroshot"
    assert "alpha 1, 1; beta 5.5, 5.5" in [r["chosen (per seed)"] for r in table]
    with pytest.raises(ValueError, match="valid: zeroshot, linear_probe"):
        fewshot_curve((x, y), (xt, yt), w0, 30.0, FewShotConfig(methods=("cache",)), progress=False)
    plot_fewshot(result, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 10_000

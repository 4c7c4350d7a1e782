"""Layer sensitivity phi_l under the drift-weighted loss, for a tiny model of each family."""

import math

import pytest
import torch
from policy_data import synthetic_batch, synthetic_episodes, tiny_model
from torch import nn

from daptq_ros.drift.scores import virtual_chain_scores
from daptq_ros.errors import PolicyError
from daptq_ros.policy.calibration import calibration_batches
from daptq_ros.policy.families import FAMILIES, get_family
from daptq_ros.policy.sensitivity import layer_sensitivities
from daptq_ros.policy.training import TrainConfig, _model_setup

FAMILY_NAMES = sorted(FAMILIES)
BATCHES = [synthetic_batch(4, seed=s) for s in range(3)]


def _model(family):
    """A tiny model with its zero-initialised layers (DiT / adaLN outputs) perturbed.

    At initialisation those zeros block every gradient upstream of them, as no trained model
    does; a small seeded perturbation stands in for training.
    """
    model, _ = tiny_model(family)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))
    return model


def _phi(family, model, weights=None, seed=0, **kwargs):
    adapter = get_family(family)
    return layer_sensitivities(
        adapter, model, BATCHES, weights, seed=seed, progress=False, **kwargs
    )


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_every_linear_gets_a_finite_non_negative_score(family):
    model = _model(family)
    phi = _phi(family, model)
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    assert list(phi) == linears
    assert all(math.isfinite(v) and v >= 0 for v in phi.values())
    head = get_family(family).action_head_layers(model)
    assert all(phi[name] > 0 for name in head)
    assert sum(v > 0 for v in phi.values()) > len(phi) // 2


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_deterministic_for_a_seed_and_the_model_is_left_as_it_was(family):
    model = _model(family)
    model.train()
    frozen = next(model.parameters())
    frozen.requires_grad_(False)
    first, again = _phi(family, model), _phi(family, model)
    assert first == again
    assert first != _phi(family, model, seed=1)
    assert model.training and not frozen.requires_grad
    assert all(p.requires_grad for p in model.parameters() if p is not frozen)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_drift_weights_change_the_scores(family):
    model = _model(family)
    head_out = get_family(family).action_head_layers(model)[-1]
    plain = _phi(family, model)
    # The loss is linear in the weights: doubling them doubles every phi.
    doubled = _phi(family, model, torch.tensor([2.0, 2.0]))
    for name, value in plain.items():
        assert doubled[name] == pytest.approx(2 * value, rel=1e-5)
    first = _phi(family, model, torch.tensor([1.9, 0.1]))
    second = _phi(family, model, torch.tensor([0.1, 1.9]))
    assert first[head_out] != pytest.approx(second[head_out], rel=1e-3)

    def share(phi):
        return phi[head_out] / sum(phi.values())

    assert share(first) != pytest.approx(share(second), rel=1e-3)


def test_named_layers_only_and_the_same_values():
    model = _model("cogact")
    names = get_family("cogact").action_head_layers(model)
    full = _phi("cogact", model)
    subset = _phi("cogact", model, layer_names=names)
    assert list(subset) == names
    for name in names:
        assert subset[name] == pytest.approx(full[name], rel=1e-6)


def test_bad_layers_weights_and_batches_are_refused():
    model = _model("cogact")
    adapter = get_family("cogact")
    with pytest.raises(PolicyError, match=r"not nn\.Linear"):
        _phi("cogact", model, layer_names=["action_head", "nope"])
    with pytest.raises(PolicyError, match="dim_weights has shape"):
        _phi("cogact", model, torch.ones(3))
    with pytest.raises(PolicyError, match="no calibration batches"):
        layer_sensitivities(adapter, model, [], None, progress=False)
    unlabeled = synthetic_batch(2)
    unlabeled.actions = None
    with pytest.raises(PolicyError, match="no actions"):
        layer_sensitivities(adapter, model, iter([unlabeled]), None, progress=False)


def test_sensitivities_from_calibration_batches_and_chain_scores():
    # The front half of DA-PTQ's profiling: calibration batches, drift scores, phi.
    episodes = synthetic_episodes(3)
    config = TrainConfig(
        family="pi0", dt=0.05, action_names=("dx", "gripper"), size="tiny", horizon=4
    )
    adapter, family_config, tokenizer, meta = _model_setup(episodes, config)
    torch.manual_seed(0)
    model = adapter.build(family_config)
    batches = calibration_batches(tokenizer, meta, episodes, num_batches=2, batch_size=4)
    actions = torch.cat([b.actions.reshape(-1, 2) for b in batches]).numpy()
    weights = torch.from_numpy(virtual_chain_scores(actions, translation_dims=[0]))
    phi = layer_sensitivities(adapter, model, batches, weights, progress=False)
    assert all(math.isfinite(v) and v >= 0 for v in phi.values())
    assert phi["action_out_proj"] > 0

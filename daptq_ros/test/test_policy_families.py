"""Both VLA families behind the adapter: loss, learning, sampling, DA-PTQ layer names."""

import pytest
import torch
from policy_data import ACTION_DIM, HORIZON, IMAGE_SIZE, STATE_DIM, synthetic_batch, tiny_model
from torch import nn

from daptq_ros.errors import ModelError
from daptq_ros.policy.ddim import squared_cosine_alphas_cumprod
from daptq_ros.policy.families import FAMILIES, get_family
from daptq_ros.policy.families.base import weighted_mse

FAMILY_NAMES = sorted(FAMILIES)


def _fixed_loss(adapter, model, batch, weights=None):
    """The loss at fixed noise and times, so two evaluations are comparable."""
    with torch.no_grad():
        return float(adapter.loss(model, batch, weights, torch.Generator().manual_seed(123)))


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_loss_is_finite_and_decreases_on_a_learnable_task(family):
    adapter = get_family(family)
    model, _ = tiny_model(family)
    batch = synthetic_batch(16)
    before = _fixed_loss(adapter, model, batch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(30):
        loss = adapter.loss(model, batch, generator=generator)
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert _fixed_loss(adapter, model, batch) < 0.7 * before


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_sample_shape_and_determinism(family):
    adapter = get_family(family)
    model, _ = tiny_model(family)
    model.eval()
    batch = synthetic_batch(3)
    first = adapter.sample(model, batch, 3, torch.Generator().manual_seed(1))
    again = adapter.sample(model, batch, 3, torch.Generator().manual_seed(1))
    assert first.shape == (3, HORIZON, ACTION_DIM)
    assert torch.isfinite(first).all()
    torch.testing.assert_close(first, again, rtol=0, atol=0)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_layer_names_are_linear_modules_of_the_model(family):
    adapter = get_family(family)
    model, _ = tiny_model(family)
    modules = dict(model.named_modules())
    interface, head = adapter.interface_layers(model), adapter.action_head_layers(model)
    assert interface and head
    for name in interface + head:
        assert isinstance(modules[name], nn.Linear), name
    assert len(set(head)) == len(head)


def test_cogact_interface_is_the_cognition_projection():
    adapter = get_family("cogact")
    model, _ = tiny_model("cogact")
    assert adapter.interface_layers(model) == ["cognition_proj"]
    head = adapter.action_head_layers(model)
    assert head[0] == "action_head.action_in" and head[-1] == "action_head.out"
    assert "action_head.blocks.0.qkv" in head


def test_cogact_head_is_conditioned_on_every_cognition_token():
    model, _ = tiny_model("cogact")
    model.eval()
    batch = synthetic_batch(3)
    tokens = model.config.cognition_tokens
    assert tokens > 1
    z = model.encode(batch)
    assert z.shape == (3, tokens, model.config.head_hidden_size)
    nn.init.normal_(model.action_head.out.weight)  # the zero-initialised output hides z
    noisy = torch.randn(3, HORIZON, ACTION_DIM)
    timesteps = torch.tensor([5, 50, 90])
    predicted = model.action_head(noisy, timesteps, z)
    for index in range(tokens):
        changed = z.clone()
        changed[:, index] = torch.randn_like(changed[:, index])  # (a constant shift is normed away)
        assert not torch.allclose(model.action_head(noisy, timesteps, changed), predicted)


def test_cogact_with_one_cognition_token_keeps_the_saved_layout():
    """Models saved before `cognition_tokens` existed (CogACT's single token) still load."""
    config = dict(tiny_model("cogact")[0].config.to_dict(), cognition_tokens=1)
    model = get_family("cogact").build(config)
    assert model.cognition_token.shape[1] == 1
    assert model.action_head.position.shape[1] == 1 + HORIZON
    assert model.encode(synthetic_batch(2)).shape[:2] == (2, 1)


def _guided_cogact(**settings):
    config = dict(tiny_model("cogact")[0].config.to_dict(), **settings)
    torch.manual_seed(0)
    model = get_family("cogact").build(config)
    nn.init.normal_(model.action_head.out.weight)  # the zero-initialised output hides z
    return model.eval()


def test_cogact_guidance_scale_zero_samples_the_unconditional_head():
    adapter = get_family("cogact")
    batch, other = synthetic_batch(3, seed=0), synthetic_batch(3, seed=1)

    def sample(model, batch):
        return adapter.sample(model, batch, 3, torch.Generator().manual_seed(1))

    plain = _guided_cogact()
    assert not torch.allclose(sample(plain, batch), sample(plain, other))
    unconditional = _guided_cogact(guidance_scale=0.0)  # eps_u only: z cannot matter
    torch.testing.assert_close(sample(unconditional, batch), sample(unconditional, other))
    guided = _guided_cogact(guidance_scale=2.0)
    assert not torch.allclose(sample(guided, batch), sample(plain, batch))


def test_cogact_condition_dropout_drops_z_in_training_only():
    adapter = get_family("cogact")
    batch, other = synthetic_batch(4, seed=0), synthetic_batch(4, seed=1)
    other.actions = batch.actions  # the same targets: only the observations differ

    def loss(model, batch):
        with torch.no_grad():
            return float(adapter.loss(model, batch, generator=torch.Generator().manual_seed(5)))

    model = _guided_cogact(condition_dropout=0.999)  # every row is (almost surely) dropped
    assert loss(model, batch) != loss(model, other)  # eval mode: z is kept
    model.train()
    assert loss(model, batch) == pytest.approx(loss(model, other), rel=1e-6)
    with pytest.raises(ModelError, match="condition_dropout"):
        _guided_cogact(condition_dropout=1.0)


def test_pi0_interface_is_backbone_kv_and_expert_io():
    adapter = get_family("pi0")
    model, _ = tiny_model("pi0")
    interface = adapter.interface_layers(model)
    assert "model.vlm.language_model.layers.0.self_attn.k_proj" in interface
    assert "model.vlm.language_model.layers.0.self_attn.v_proj" in interface
    assert {"action_out_proj", "embed_action_time.action_in_proj"} <= set(interface)
    assert all(
        name.startswith(("model.dit", "embed_action_time", "action_out_proj"))
        for name in adapter.action_head_layers(model)
    )


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_dim_weights_change_the_loss(family):
    adapter = get_family(family)
    model, _ = tiny_model(family)
    batch = synthetic_batch(4)
    uniform = _fixed_loss(adapter, model, batch)
    assert _fixed_loss(adapter, model, batch, torch.ones(ACTION_DIM)) == pytest.approx(uniform)
    assert _fixed_loss(adapter, model, batch, torch.tensor([1.8, 0.2])) != pytest.approx(uniform)


def test_weighted_mse_ignores_padding_and_weights_dimensions():
    prediction = torch.zeros(2, 3, 2)
    target = torch.ones(2, 3, 2)
    target[:, 2] = 9.0  # padded steps: must not count
    mask = torch.tensor([[True, True, False], [True, True, False]])
    assert float(weighted_mse(prediction, target, mask)) == pytest.approx(1.0)
    weights = torch.tensor([1.5, 0.5])
    assert float(weighted_mse(prediction, target, mask, weights)) == pytest.approx(1.0)
    target[..., 1] = 0.0
    assert float(weighted_mse(prediction, target, mask, weights)) == pytest.approx(0.75)


def test_cogact_runs_with_a_siglip_vision_tower():
    adapter = get_family("cogact")
    config = adapter.default_config(
        size="tiny",
        vocab_size=12,
        max_text_length=6,
        state_dim=STATE_DIM,
        action_dim=ACTION_DIM,
        horizon=HORIZON,
        image_size=IMAGE_SIZE,
        num_views=2,
    )
    config.update(
        vision="siglip",
        siglip={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 16,
            "patch_size": 8,
        },
    )
    model = adapter.build(config)
    assert adapter.sample(model.eval(), synthetic_batch(2), 2).shape == (2, HORIZON, ACTION_DIM)


def test_unknown_family_and_size_are_model_errors():
    with pytest.raises(ModelError, match="cogact, pi0"):
        get_family("rt2")
    with pytest.raises(ModelError, match="no size 'huge'"):
        tiny_model_config = dict(
            vocab_size=12,
            max_text_length=6,
            state_dim=3,
            action_dim=2,
            horizon=4,
            image_size=IMAGE_SIZE,
            num_views=2,
        )
        get_family("cogact").default_config(size="huge", **tiny_model_config)
    with pytest.raises(ModelError, match="unknown model setting"):
        get_family("pi0").default_config(size="tiny", overrides={"depth": 3}, **tiny_model_config)


def test_squared_cosine_schedule_is_monotone_from_one_to_zero():
    alphas = squared_cosine_alphas_cumprod(100)
    assert alphas[0] > 0.99 and alphas[-1] < 1e-3
    assert (alphas[1:] < alphas[:-1]).all()


def test_pi0_real_checkpoint_loads_from_a_local_directory(tmp_path):
    adapter = get_family("pi0")
    config = adapter.default_config(
        size="tiny",
        vocab_size=12,
        max_text_length=6,
        state_dim=STATE_DIM,
        action_dim=ACTION_DIM,
        horizon=HORIZON,
        image_size=IMAGE_SIZE,
        num_views=2,
    )
    del config["daptq_vision_stem"]  # a native checkpoint: SigLIP tower, as transformers saves it
    model = adapter.build(config)
    model.save_pretrained(tmp_path)
    loaded = adapter.from_pretrained(tmp_path)
    for (name, a), (_, b) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=name)
    with pytest.raises(ModelError, match=r"config\.json"):
        adapter.from_pretrained(tmp_path / "absent")


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_a_rows_output_does_not_depend_on_its_padding(family):
    adapter = get_family(family)
    model, _ = tiny_model(family)
    with torch.no_grad():  # leave the zero output initialisation, under which z is ignored
        for param in model.parameters():
            param.add_(0.1 * torch.randn(param.shape, generator=torch.Generator().manual_seed(2)))
    model.eval()
    short, long = synthetic_batch(2), synthetic_batch(2)
    for batch in (short, long):
        batch.attention_mask[0, 3:] = 0  # row 0: 3 tokens, padded
    short.attention_mask[1, 3:] = 0  # row 1 short too: the batch trims to 3 columns
    a = adapter.sample(model, short, 2, torch.Generator().manual_seed(0))
    b = adapter.sample(model, long, 2, torch.Generator().manual_seed(0))
    torch.testing.assert_close(a[0], b[0])
    assert not torch.allclose(a[1], b[1])


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_prefix_modules_run_once_per_chunk(family):
    adapter = get_family(family)
    model, _ = tiny_model(family)
    model.eval()
    calls = {name: 0 for name in adapter.prefix_modules(model)}
    for name in calls:

        def count(*_, name=name):
            calls[name] += 1

        model.get_submodule(name).register_forward_hook(count)
    adapter.sample(model, synthetic_batch(2), 4, torch.Generator().manual_seed(0))
    assert calls and all(n == 1 for n in calls.values()), calls
    head = set(adapter.action_head_layers(model))
    assert not any(layer.startswith(f"{name}.") for layer in head for name in calls)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_whole_model_bf16_deployment_samples_float32_chunks_close_to_fp32(family):
    from daptq_ros.quant import deploy

    adapter = get_family(family)
    model, _ = tiny_model(family)
    for parameter in model.parameters():  # cogact's zero-initialised output would hide errors
        if parameter.dim() > 1:
            nn.init.normal_(parameter, std=0.2)
    model.eval()
    batch = synthetic_batch(2)
    reference = adapter.sample(model, batch, 3, torch.Generator().manual_seed(1))
    deployed = deploy(model, whole_model_bf16=True)
    chunk = adapter.sample(deployed, batch, 3, torch.Generator().manual_seed(1))
    assert chunk.dtype == torch.float32 and chunk.shape == reference.shape
    assert 0 < (chunk - reference).abs().max() < 0.15

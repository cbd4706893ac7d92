"""The routed experts under transformers' experts implementations (eager loop, grouped_mm, batched_mm): which one is
chosen, that the choice really dispatches, and parity of every one with the official fixture and with eager."""

import pytest
import torch
from torch.profiler import profile

from model.checkpoint.convert import build_empty_model, load_model, load_official_state_dict
from model.configuration import DeepSeekOCRConfig

pytestmark = pytest.mark.slow  # every experts kernel; the fast lane runs the default one everywhere else

IMPLEMENTATIONS = ("eager", "grouped_mm", "batched_mm")
# The aten op that only that implementation's experts forward runs (the eager loop accumulates with index_add_).
SIGNATURE_OP = {"eager": "aten::index_add_", "grouped_mm": "aten::_grouped_mm", "batched_mm": "aten::bmm"}


def experts_ops(model) -> set[str]:
    """aten ops run by the first MoE layer's routed experts on a few tokens."""
    experts = model.language_model.layers[model.config.first_k_dense_replace].mlp.experts
    # In the model's dtype: load_pretrained's auto is bfloat16 on a CPU with bf16 units.
    hidden = torch.randn(5, model.config.hidden_size, dtype=model.dtype)
    top_k = model.config.num_experts_per_tok
    index = torch.arange(5 * top_k).reshape(5, top_k) % model.config.n_routed_experts
    with torch.no_grad(), profile() as prof:
        experts(hidden, index, torch.full((5, top_k), 0.5, dtype=model.dtype))
    return {event.name for event in prof.events()}


def test_grouped_mm_is_the_default_and_really_runs():
    model = load_model("tiny-random")
    assert model.config._experts_implementation == "grouped_mm"
    assert SIGNATURE_OP["grouped_mm"] in experts_ops(model)
    assert SIGNATURE_OP["eager"] not in experts_ops(model)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_each_implementation_dispatches_at_load_and_when_set(implementation):
    model = load_model("tiny-random", experts_implementation=implementation)
    assert model.config._experts_implementation == implementation
    ops = experts_ops(model)
    assert SIGNATURE_OP[implementation] in ops
    assert not {SIGNATURE_OP[other] for other in IMPLEMENTATIONS if other != implementation} & ops

    other = "eager" if implementation != "eager" else "batched_mm"
    model.set_experts_implementation(other)  # transformers' own switch on a loaded model
    assert SIGNATURE_OP[other] in experts_ops(model)


def test_saved_model_reloads_with_the_asked_implementation(tmp_path):
    load_model("tiny-random").save_pretrained(tmp_path)
    assert load_model(str(tmp_path)).config._experts_implementation == "grouped_mm"
    reloaded = load_model(str(tmp_path), experts_implementation="batched_mm")
    assert SIGNATURE_OP["batched_mm"] in experts_ops(reloaded)


@pytest.fixture(scope="module")
def exported_folder(tmp_path_factory):
    from model.checkpoint.export import export_model

    return str(export_model("tiny-random", tmp_path_factory.mktemp("export") / "official", dtype="float32"))


def _load_pretrained(name, **load):
    from config import LoadSettings
    from model.checkpoint.load import load_pretrained

    return load_pretrained(name, LoadSettings(device="cpu", **load)).model


@pytest.mark.parametrize("load", [load_model, _load_pretrained], ids=["load_model", "load_pretrained"])
def test_official_layout_folder_runs_the_default_kernels_or_the_asked_ones(exported_folder, load):
    """An export (the hub checkpoint's layout) is read by the official-key converter, not from_pretrained: it
    must still get transformers' default (grouped_mm), never silently the eager loop, and honour a choice."""
    model = load(exported_folder)
    assert model.config._experts_implementation == "grouped_mm"
    assert SIGNATURE_OP["grouped_mm"] in experts_ops(model) and SIGNATURE_OP["eager"] not in experts_ops(model)
    for implementation in ("eager", "batched_mm"):
        chosen = load(exported_folder, experts_implementation=implementation)
        assert chosen.config._experts_implementation == implementation
        assert SIGNATURE_OP[implementation] in experts_ops(chosen)


def test_unknown_implementation_is_refused():
    with pytest.raises(ValueError, match="experts_implementation"):
        load_model("tiny-random", experts_implementation="loop")


# ------------------------------------------------------------------------- parity with the official fixture


@pytest.fixture(scope="module")
def fixture_model(official_state_dict, official_config):
    model = build_empty_model(DeepSeekOCRConfig.from_official_config(official_config), torch.float32)
    load_official_state_dict(model, official_state_dict)
    return model.eval()


@pytest.fixture(scope="module")
def a_features(fixture_model, reference_tensors):
    with torch.no_grad():
        return fixture_model.encode_images(reference_tensors["a_pixel_values"])


def case_c(model, ref, features):
    return model(input_ids=ref["c_input_ids"], attention_mask=ref["c_attention_mask"], vision_features=features,
                 images_spatial_crop=ref["a_images_spatial_crop"], labels=ref["c_labels"])


def training_step_grads(model, ref, features) -> dict[str, torch.Tensor]:
    """Gradients of one training-mode step on case C (cross-entropy + the balance loss)."""
    model.train()
    try:
        case_c(model, ref, features).loss.backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()
    return grads


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_case_c_and_d_under_every_implementation(fixture_model, reference_tensors, a_features, implementation):
    ref = reference_tensors
    fixture_model.set_experts_implementation(implementation)
    assert SIGNATURE_OP[implementation] in experts_ops(fixture_model)
    with torch.no_grad():
        loss = case_c(fixture_model, ref, a_features).loss
    torch.testing.assert_close(loss, ref["c_loss"], rtol=1e-5, atol=0)
    generated = fixture_model.generate(
        input_ids=ref["a_input_ids"], vision_features=a_features, images_spatial_crop=ref["a_images_spatial_crop"],
        max_new_tokens=10, do_sample=False, no_repeat_ngram_size=20, eos_token_id=1, use_cache=True,
    )
    assert generated[0, ref["a_input_ids"].shape[1]:].tolist() == ref["d_generated_ids"].tolist()


@pytest.mark.parametrize("implementation", ["grouped_mm", "batched_mm"])
def test_training_step_gradients_match_eager(fixture_model, reference_tensors, a_features, implementation):
    fixture_model.set_experts_implementation("eager")
    expected = training_step_grads(fixture_model, reference_tensors, a_features)
    fixture_model.set_experts_implementation(implementation)
    actual = training_step_grads(fixture_model, reference_tensors, a_features)
    assert actual.keys() == expected.keys()
    # Routed experts and routers included: both get gradients through the experts' outputs.
    assert any(".experts.gate_up_proj" in name for name in actual) and any(".mlp.gate." in name for name in actual)
    for name, grad in expected.items():
        torch.testing.assert_close(actual[name], grad, rtol=1e-4, atol=1e-7, msg=lambda m: f"{name}: {m}")

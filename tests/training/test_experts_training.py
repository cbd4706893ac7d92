"""Training under each MoE experts implementation: the run records the one it used, and a LoRA step with gradient
checkpointing and the balance loss gives eager's gradients."""
import pytest
import torch

from config import LoadSettings, LoraConfig
from tests.training.test_deepseek_trainer import tiny_config
from training.deepseek_trainer import build_model

pytestmark = pytest.mark.slow  # training under each experts kernel; the default one trains in the fast lane

IMAGE = 128815


def test_the_config_records_the_implementation_in_use(tmp_path):
    default = tiny_config(tmp_path)
    assert build_model(default)[0].config._experts_implementation == default.load.experts_implementation \
        == "grouped_mm"
    chosen = tiny_config(tmp_path, load=LoadSettings(experts_implementation="batched_mm"))
    assert build_model(chosen)[0].config._experts_implementation == chosen.load.experts_implementation \
        == "batched_mm"


def lora_step_grads(tmp_path, implementation: str) -> dict[str, torch.Tensor]:
    cfg = tiny_config(tmp_path, load=LoadSettings(experts_implementation=implementation),
                      lora=LoraConfig(enabled=True, r=4, alpha=8, dropout=0.0))
    torch.manual_seed(0)  # the same LoRA initialisation for every implementation
    model, _ = build_model(cfg)
    model.activation_checkpointing_enable()
    model.train()
    ids = torch.tensor([[0] + [IMAGE] * 21 + [5, 6, 7, 8, 9, 1]])
    pixels = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    out = model(input_ids=ids, pixel_values=pixels, labels=ids)
    assert out.aux_loss is not None and out.aux_loss > 0
    out.loss.backward()
    return {name: p.grad for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("implementation", ["grouped_mm", "batched_mm"])
def test_lora_checkpointed_step_gives_eager_gradients(tmp_path, implementation):
    expected = lora_step_grads(tmp_path, "eager")
    actual = lora_step_grads(tmp_path, implementation)
    assert actual.keys() == expected.keys() and any(".lora_B." in name for name in actual)
    for name, grad in expected.items():
        torch.testing.assert_close(actual[name], grad, rtol=1e-4, atol=1e-7, msg=lambda m: f"{name}: {m}")

"""bfloat16 against the official float32 outputs (the reference fixture): what a bf16 load gives. bf16 keeps 8
significant bits (relative rounding 2^-9 = 2e-3 per operation), so after the full-size DeepEncoder (SAM ViT-B +
CLIP-L) and the decoder the stated tolerance is a relative L2 error below 3% for the encoder's projected output and
the logits; the greedy ids are reported beside the float32 reference ones."""
import pytest
import torch

from model.checkpoint.convert import build_empty_model, load_official_state_dict
from model.configuration import DeepSeekOCRConfig

ENCODER_RTOL = 0.03  # relative L2 error, projected page features
LOGITS_RTOL = 0.03  # relative L2 error, the stored logits rows of case C

# The full-size DeepEncoder and the decoder, in bf16 beside the float32 references.
pytestmark = pytest.mark.slow


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual.float() - expected.float()).norm() / expected.float().norm()).item()


@pytest.fixture(scope="module")
def bf16_model(official_state_dict, official_config):
    model = build_empty_model(DeepSeekOCRConfig.from_official_config(official_config), torch.bfloat16)
    load_official_state_dict(model, official_state_dict)  # cast to the model's bf16 parameters
    return model.eval()


def test_bf16_model_matches_the_float32_reference_within_bf16_tolerance(bf16_model, reference_tensors, capsys):
    ref = reference_tensors
    with torch.no_grad():
        features = bf16_model.encode_images(ref["a_pixel_values"].to(torch.bfloat16))
        projected = bf16_model.projector(features.global_feats)
        out = bf16_model(input_ids=ref["c_input_ids"], attention_mask=ref["c_attention_mask"],
                         vision_features=features, images_spatial_crop=ref["a_images_spatial_crop"])
        generated = bf16_model.generate(
            input_ids=ref["a_input_ids"], vision_features=features, images_spatial_crop=ref["a_images_spatial_crop"],
            max_new_tokens=10, do_sample=False, no_repeat_ngram_size=20, eos_token_id=1, use_cache=True)
    assert bf16_model.dtype == torch.bfloat16 and projected.dtype == torch.bfloat16
    encoder_error = relative_error(projected, ref["a_proj_out"])
    logits = out.logits[0, ref["c_logits_rows_index"]]
    logits_error = relative_error(logits, ref["c_logits_rows"])
    argmax_agreement = (out.logits[0].argmax(-1) == ref["c_logits_row_argmax"]).float().mean().item()
    ids = generated[0, ref["a_input_ids"].shape[1]:].tolist()
    same = sum(a == b for a, b in zip(ids, ref["d_generated_ids"].tolist()))
    with capsys.disabled():
        print(f"\nbf16 vs official float32: encoder rel. L2 {encoder_error:.2e}, logits rel. L2 {logits_error:.2e}, "
              f"argmax agreement {argmax_agreement:.1%}; greedy ids {ids} vs {ref['d_generated_ids'].tolist()} "
              f"({same}/10 equal)")
    assert encoder_error < ENCODER_RTOL
    assert logits_error < LOGITS_RTOL

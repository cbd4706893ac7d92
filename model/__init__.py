"""DeepSeek-OCR: config, DeepEncoder, MoE decoder, full model, checkpoint loading, tokenizer and processor."""
from model.checkpoint.convert import load_model
from model.configuration import DeepSeekOCRConfig
from model.deep_encoder import DeepEncoder, VisionConfig
from model.image_processing import DeepSeekOCRImageProcessor, num_image_placeholders
from model.modeling import DeepSeekOCRForConditionalGeneration, VisionFeatures
from model.official_layout import convert_official_state_dict
from model.params import (
    estimate_training_memory,
    freeze_vision_encoder,
    parameter_counts,
    trainable_parameter_counts,
)
from model.processing import DeepSeekOCRProcessor
from model.tokenizer import load_tokenizer

__all__ = [
    "DeepEncoder", "DeepSeekOCRConfig", "DeepSeekOCRForConditionalGeneration", "DeepSeekOCRImageProcessor",
    "DeepSeekOCRProcessor", "VisionConfig", "VisionFeatures", "convert_official_state_dict",
    "estimate_training_memory", "freeze_vision_encoder", "load_model", "load_tokenizer", "num_image_placeholders",
    "parameter_counts", "trainable_parameter_counts",
]

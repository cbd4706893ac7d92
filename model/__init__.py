"""DeepSeek-OCR: config, DeepEncoder, MoE decoder, full model, checkpoint loading, tokenizer and processor."""
from model.configuration import DeepseekOCRConfig
from model.convert import convert_official_state_dict, load_model
from model.deep_encoder import DeepEncoder, VisionConfig
from model.image_processing import DeepseekOCRImageProcessor, num_image_placeholders
from model.modeling import DeepseekOCRForConditionalGeneration, VisionFeatures
from model.params import (
    estimate_training_memory,
    freeze_vision_encoder,
    parameter_counts,
    trainable_parameter_counts,
)
from model.processing import DeepseekOCRProcessor
from model.tokenizer import load_tokenizer

__all__ = [
    "DeepEncoder", "DeepseekOCRConfig", "DeepseekOCRForConditionalGeneration", "DeepseekOCRImageProcessor",
    "DeepseekOCRProcessor", "VisionConfig", "VisionFeatures", "convert_official_state_dict",
    "estimate_training_memory", "freeze_vision_encoder", "load_model", "load_tokenizer", "num_image_placeholders",
    "parameter_counts", "trainable_parameter_counts",
]

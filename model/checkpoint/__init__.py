"""Checkpoint handling: where a model comes from (source.py), the one loader (load.py), a source's architecture and
weights through its backbone (convert.py), the official layout written (export.py) through the key table of
model/official_layout.py, LoRA merging (lora.py), device and precision (device.py), and the presets (presets.py)."""

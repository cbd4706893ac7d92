"""Checkpoint handling: where a model comes from (source.py), the one loader (load.py), the official layout read
(convert.py) and written (export.py) through one key table (official_keys.py), LoRA merging (lora.py), device and
precision (device.py), and the presets (presets.py)."""

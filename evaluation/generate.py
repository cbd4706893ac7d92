"""`python -m evaluation.generate`: the reference README's name for batch generation, which lives below evaluation
in the layers (inference/generate.py): this module only hands the command over, so `evaluation` itself imports
neither the model nor torch. Run it as a command (also under torchrun or accelerate launch)."""
import runpy

if __name__ == "__main__":
    runpy.run_module("inference.generate", run_name="__main__", alter_sys=True)

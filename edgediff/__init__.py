"""edgediff: patch diffusion trained on a GPU box, sampled on small devices under a memory budget.

Importing the package is cheap and torch-free: the device side (`bundle`, `schedule`, `cells`, `lut`,
`runtime`) uses numpy and onnxruntime only; training code lives behind the `train` extra.
"""

__version__ = "0.1.0"

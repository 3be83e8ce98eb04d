"""Networks in and out: PyTorch / NumPy / scikit-learn / ONNX classifiers in, pruned networks out as PyTorch, ONNX,
safetensors, .npz or scikit-learn.

    imports      PyTorch modules and files, state_dicts, NumPy weight lists, safetensors -> `DenseNetwork`
    scikit       an MLPClassifier (or a Pipeline ending in one) <-> a `DenseNetwork`
    onnx_import  an ONNX MLP graph -> a `DenseNetwork`
    exports      a `DenseNetwork` -> PyTorch, ONNX, safetensors, npz, skops files, read back and checked
    latency      NumPy batch latency; the network as a jitted JAX function

The names of `imports`, `exports` and `latency` are this package's own (``interop.from_torch``,
``interop.export_network``, ...).
"""

from neon_jax.interop import onnx_import, scikit
from neon_jax.interop.exports import (
                                      ALL_FORMATS,
                                      EXPORT_FORMATS,
                                      ONNX_IR_VERSION,
                                      ONNX_OPSET,
                                      check_export_dependencies,
                                      export_network,
                                      export_paths,
                                      layer_spec,
                                      parse_formats,
                                      run_onnx,
                                      softmax,
                                      state_arrays,
                                      to_onnx,
                                      to_torch,
                                      torch_state_dict,
                                      verify_exports,
)
from neon_jax.interop.imports import (
                                      SUPPORTED,
                                      TORCH_FORMAT,
                                      dense_from_layers,
                                      from_arrays,
                                      from_state_dict,
                                      from_torch,
                                      from_torch_file,
                                      load_network,
                                      load_safetensors,
                                      load_torch,
)
from neon_jax.interop.latency import jax_forward, latency_report, numpy_latency

__all__ = [
    "ALL_FORMATS", "EXPORT_FORMATS", "ONNX_IR_VERSION", "ONNX_OPSET", "SUPPORTED", "TORCH_FORMAT",
    "check_export_dependencies", "dense_from_layers", "export_network", "export_paths", "from_arrays",
    "from_state_dict", "from_torch", "from_torch_file", "jax_forward", "latency_report", "layer_spec", "load_network",
    "load_safetensors", "load_torch", "numpy_latency", "onnx_import", "parse_formats", "run_onnx", "scikit", "softmax",
    "state_arrays", "to_onnx", "to_torch", "torch_state_dict", "verify_exports",
]

"""Deployment side of xdistil, installed as the package ``xdistil_export``.

``xdistil_export.windows`` and ``xdistil_export.runtime`` import only numpy, tokenizers
and onnxruntime -- never torch or transformers -- so a deployment stays a few megabytes.
The ONNX export entry points (``xdistil_export.onnx_export``) need torch and are only
imported when exporting.
"""

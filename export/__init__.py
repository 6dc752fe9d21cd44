"""Deployment side of xdistil: the package ``xdistil_export`` (distribution ``xdistil-runtime``).

Nothing here imports torch, transformers or xdistil (tests/test_torchfree.py checks
every module): ``runtime`` (the `Predictor`), ``decode`` (IOB2 Viterbi), ``windows``,
``text``, ``serve`` (FastAPI) and ``cli`` (``xdistil-runtime predict|serve``) need only
onnxruntime, tokenizers, numpy and regex (+ fastapi/uvicorn to serve), so a deployment
installs a few megabytes. ONNX *export* needs torch and lives in ``xdistil.deployable``.
"""

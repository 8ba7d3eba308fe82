"""vlmcodec.export: turning a model into deployable artefacts.

- ``onnx``: ``export_onnx(model, dir)`` — g_a, h_a, h_s, g_s (+ pre-editor) as ONNX graphs with
  dynamic batch and size, validated, with ``manifest.json``; ``load_onnx_manifest``.
- ``tensorrt``: ``build_engines(model, dir, BuildConfig(...))`` — TensorRT 10 engines from those
  graphs (FP32/FP16, optimisation profiles, timing cache, manifest); ``tensorrt_parser_problems``
  checks a graph against TensorRT's ONNX operator list without TensorRT.
- ``parity``: ``compare_backends(codec_a, codec_b, image)`` — float differences, symbol
  agreement and cross-decode between two backends.
- ``manifest``: the network fingerprint that keys graphs and engines.
- ``c_decoder``: ``export_c_decoder(model, dir)`` — the C library's model file (decoding and
  encoding); ``CStreamDecoder`` drives that library from Python (ctypes; tests and benches).

Submodules are imported on use (``from vlmcodec.export.onnx import export_onnx``) so that
importing ``vlmcodec.export`` needs neither onnx nor TensorRT.
"""

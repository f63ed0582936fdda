"""Applications built on a CLIP model: classify, embed, index/search, serve, ONNX export.

Submodules import their heavy dependencies (faiss, fastapi, onnx) lazily, so importing one app
never pulls in another's stack."""

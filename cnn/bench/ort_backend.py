"""The ``onnxruntime`` backend of the ``predict`` cases: the cnn model exported by
:func:`cnn.onnx.inference_session` (the same weights, the same graph as ``cnn.onnx.export``
writes), run by ONNX Runtime's CPU provider with ``intra_op_num_threads`` = the case's thread
count and idle spinning off, so that its worker threads do not keep the cores busy while the
next backend is timed."""

__all__ = ["import_onnxruntime", "predict_setup"]


def import_onnxruntime(disabled):
    """``(onnxruntime module, None)``, or ``(None, reason)`` when disabled or not importable
    (``onnx`` is needed too: cnn exports the model with it)."""
    if disabled:
        return None, "disabled with --no-onnxruntime"
    try:
        import onnx  # noqa: F401  (the exporter's)
        import onnxruntime
    except Exception as exc:  # ImportError, or a broken install (OSError from a .so)
        return None, f"not importable: {type(exc).__name__}: {exc}"
    return onnxruntime, None


def predict_setup(model, threads, x):
    """``(check, run)`` of ONNX Runtime's prediction of the batch ``x`` (float32, shaped like
    the model's input) with ``model``'s weights; both return the probabilities."""
    import cnn.onnx
    session = cnn.onnx.inference_session(model, threads=threads)
    name = session.get_inputs()[0].name

    def run():
        return session.run(None, {name: x})[0]
    return (lambda: {"p": run()}, run)

"""The variants a model is timed as: reference (fastzoo's model on the reference backend, plain PyTorch),
the torchvision / timm model itself (eager), fused (the default backend), compile (torch.compile with
freezing of the reference model) and onnxruntime (the reference model exported to ONNX, CPU provider)."""
import contextlib
import io
import os
import tempfile
import time
import warnings

import torch

import fastzoo


def _oracle_model(name, num_classes=1000):
    """The torchvision (else timm) model of the same name with fastzoo's weights, if installed."""
    try:
        import torchvision
        return getattr(torchvision.models, name)(num_classes=num_classes)
    except (ImportError, AttributeError):
        pass
    try:
        import timm
        return timm.create_model(name, num_classes=num_classes)
    except Exception:  # timm missing or no such name
        return None


def library_model(canonical, aliases, fz_model):
    """The torchvision / timm model with fz_model's weights, as ("torchvision"|"timm", model) or None."""
    for alias in aliases:
        m = _oracle_model(alias)
        if m is None:
            continue
        try:
            m.load_state_dict(fz_model.state_dict())
        except (RuntimeError, KeyError):
            continue  # e.g. a timm layout, which fastzoo loads but not the other way round
        return type(m).__module__.split(".")[0], m
    return None


def build(variant, model, x, compile_mode=None):
    """A zero-argument callable running one forward of `variant`, and its set-up time in seconds."""
    t0 = time.perf_counter()
    if variant == "fused":
        def fn():
            return model(x)
    elif variant == "reference":
        def fn():
            with fastzoo.backend("reference"):
                return model(x)
    elif variant == "compile":
        fn = _compiled(model, x)
    elif variant == "onnxruntime":
        fn = _onnxruntime(model, x)
    elif variant.startswith("eager-"):
        fn = _library_eager(model, x)
    else:
        raise ValueError(f"fastzoo bench: unknown variant {variant!r}; expected reference, fused, compile, "
                         f"onnxruntime")
    return fn, time.perf_counter() - t0


def _library_eager(model, x):
    def fn():
        return model(x)
    return fn


def _compiled(model, x):
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True  # constant-fold the weights (BN folding included)
    inductor_config.cpp_wrapper = x.device.type == "cpu"
    compiled = torch.compile(model)

    def fn():
        with fastzoo.backend("reference"):
            return compiled(x)
    return fn


def _onnxruntime(model, x):
    try:
        import onnxruntime as ort
    except ImportError:
        raise RuntimeError("onnxruntime is not installed (pip install onnxruntime onnx)") from None
    if x.dtype != torch.float32 or x.device.type != "cpu":
        raise RuntimeError("the onnxruntime variant runs float32 on the CPU")
    path = os.path.join(tempfile.mkdtemp(prefix="fastzoo-bench-"), "model.onnx")
    with fastzoo.backend("reference"), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shape checks that are constant for this model
        torch.onnx.export(model, (x,), path, input_names=["x"], output_names=["y"], dynamo=False)
    so = ort.SessionOptions()
    so.intra_op_num_threads = torch.get_num_threads()
    so.inter_op_num_threads = 1
    # Spinning threads would steal the cores from the variant timed next.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    feed = {"x": x.numpy()}

    def fn():
        return sess.run(None, feed)
    return fn

"""FLOP counts of the cases (stated, not measured; see the package doc for the rules)."""

__all__ = ["conv_flops", "pool_forward_flops", "pool_backward_flops", "layer_flops", "model_flops"]


def conv_flops(n, c, k, kh, kw, oh, ow):
    """Multiply-adds of one conv forward, counted as 2 FLOPs: ``2 N K C kh kw OH OW``."""
    return 2 * n * k * c * kh * kw * oh * ow


def pool_forward_flops(n, c, oh, ow, kh, kw):
    """Comparisons of a max-pool forward: ``kh kw - 1`` per output."""
    return n * c * oh * ow * (kh * kw - 1)


def pool_backward_flops(n, c, oh, ow):
    """One add per output routed back."""
    return n * c * oh * ow


def layer_flops(layer, batch):
    """``(forward, backward)`` FLOPs of a built cnn layer for a batch; 0 for layers that do
    no arithmetic counted here (Flatten, Dropout, activations)."""
    name = type(layer).__name__
    if name == "Conv2D":
        k, c, kh, kw = layer.params[0].shape
        _, oh, ow = layer.output_shape
        f = conv_flops(batch, c, k, kh, kw, oh, ow)
        return f, f + (f if layer.need_input_grad else 0)
    if name == "Dense":
        f = 2 * batch * layer.input_shape[0] * layer.units
        return f, f + (f if layer.need_input_grad else 0)
    if name == "MaxPool2D":
        c, oh, ow = layer.output_shape
        kh, kw = layer.size
        return (pool_forward_flops(batch, c, oh, ow, kh, kw),
                pool_backward_flops(batch, c, oh, ow) if layer.need_input_grad else 0)
    return 0, 0


def model_flops(model, batch, training):
    """FLOPs of one ``predict`` (forward) or ``train_step`` (forward + backward) on a batch."""
    total = 0
    for layer in model.layers:
        f, b = layer_flops(layer, batch)
        total += f + (b if training else 0)
    return total

"""``python -m cnn.bench``: how fast cnn is, beside the NumPy reference and PyTorch.

One process runs every case for three backends:

* ``cnn``: :mod:`cnn.functional` for the kernel cases, :class:`cnn.Sequential` for the
  whole-model cases (``train_step``, ``predict``);
* ``reference``: :mod:`cnn.reference` (plain NumPy, the seed's equations) and a small NumPy
  network built on it with the same weights; skipped where one repetition would take longer
  than ``--reference-limit`` seconds (2 s; 0.3 s with ``--quick``);
* ``torch``: PyTorch on the CPU, when importable, with the same thread count, shapes, float32
  data and weights (copied from the cnn model);
* ``onnxruntime`` (``ORT`` in the table), for the ``predict`` cases only, when ``onnx`` and
  ``onnxruntime`` are importable (``--no-onnxruntime`` turns it off): the cnn model exported
  by :func:`cnn.onnx.inference_session` (the same weights), ``intra_op_num_threads`` = the
  case's threads, idle spinning off so its workers leave the cores to the next backend.

Before anything is timed, the outputs of the three are compared (forward values, every
gradient, the model losses of two identical steps and the weights after them, predicted
probabilities) with the tolerances stated in :data:`cnn.bench.check.TOLERANCES`; a mismatch
is printed loudly, recorded in the JSON and makes the exit status 1.

Timing: at least 2 warm-up calls, then repetitions until a time budget per backend is spent
(and at least a minimum count), in rounds that alternate the backends so that a change in the
machine's load hits all of them alike. Reported: median, min/max and the inter-quartile range.
That is the *interleaved* mode (the ratio). In the *alone* mode (``--mode alone|both``; both is
the default of a full run) the zoo cases, the DESIGN CNN's ``predict`` and its batch-1 latency
are also timed with each library alone in its own child process, cnn, torch, ORT, cnn, ...
for ``--rounds`` rounds (:mod:`~cnn.bench.alone`): no library keeps another's thread pool warm,
which is what a user sees; the children report their peak RSS too. The report ends with the
targets of issue 15, held or missed (:mod:`~cnn.bench.targets`).

FLOP counts (stated, not measured; bias, activations and the optimizer update are not counted):

* conv forward: ``2 N K C kh kw OH OW`` (one multiply and one add per weight and output);
* conv forward + backward: forward + ``dW`` (the same count) + ``dx`` (the same count); the
  kernel cases compute ``dx``;
* max-pool forward: ``N C OH OW (kh kw - 1)`` comparisons; backward: ``N C OH OW`` adds;
* dense: ``2 N in out``, with the same rule for its backward;
* a model: the sum over its layers; a training step adds each layer's backward, where the first
  layer with weights computes no ``dx`` (nothing before it needs it).

Ratios are ``other backend's median / cnn's median`` (``vs torch``, ``vs ref``, ``vs ORT``):
above 1 cnn is faster. For the memory
case they are ``other's peak RSS / cnn's peak RSS``: above 1 cnn uses less.

Run ``python -m cnn.bench --help`` for the options; see ``bench/README.md``.

The modules: :mod:`~cnn.bench.cli` (the command line and the run of a case),
:mod:`~cnn.bench.cases` (the cases), :mod:`~cnn.bench.flops`, :mod:`~cnn.bench.check` (the
agreement check and its tolerances), :mod:`~cnn.bench.timing`, :mod:`~cnn.bench.machine`
(machine facts and load), :mod:`~cnn.bench.report` (the printed tables),
:mod:`~cnn.bench.nets` (the bench's networks and their backend-neutral layer spec),
:mod:`~cnn.bench.torch_backend`, :mod:`~cnn.bench.ort_backend`, :mod:`~cnn.bench.reference_backend`, :mod:`~cnn.bench.data`,
:mod:`~cnn.bench.breakdown` (``--breakdown``, through the model's layer hooks),
:mod:`~cnn.bench.memory` and the memory probes :mod:`~cnn.bench.memory_cnn` and
:mod:`~cnn.bench.memory_torch` (scripts run in a fresh interpreter), :mod:`~cnn.bench.alone`
and its child script :mod:`~cnn.bench.alone_child`, :mod:`~cnn.bench.targets`.
"""

__all__ = ["main"]


def main(argv=None):
    """Run ``python -m cnn.bench`` with ``argv`` (default ``sys.argv[1:]``); returns the exit
    status: 0, or 1 when the backends' outputs disagree."""
    from .cli import main as run
    return run(argv)


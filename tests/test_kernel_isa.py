"""The kernel clones (AVX-512F, AVX2, portable): the one chosen at load time, and bit-identical
results whichever runs.

Each clone is forced in a child process with ``CNN_KERNEL_ISA`` (it caps the choice); the
children run every cloned kernel (Winograd forward, weight and input gradients, the direct
one-channel conv and its pooled twin, the 2x2 max-pool, batch-norm training forward and
backward, the elementwise ReLU and sums) on the same seeded data and save the results, which must
agree to the bit. The oracle tests of those kernels run in this process, on the best clone.
"""
import os
import platform
import subprocess
import sys
import sysconfig

import pytest
from conftest import child_env, run_under_clones

import cnn

ORDER = ("default", "avx2", "avx512f")


def _cpu_flags():
    """The CPU's feature flags from /proc/cpuinfo (Linux), independent of cnn's detection."""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


X86_LINUX = sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")


def _best_isa():
    """The clone the resolver must pick: the best the CPU has, if the build has clones."""
    from cnn._ext import _conv

    if not _conv.kernel_clones_built():
        return "default"
    flags = _cpu_flags()
    return "avx512f" if "avx512f" in flags else "avx2" if "avx2" in flags else "default"


def _child(code, **env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=child_env(**env), timeout=300, cwd=os.path.dirname(__file__))


def test_kernel_isa_is_reported_and_valid():
    isa = cnn.show_config()["kernel_isa"]
    assert isa in ORDER
    if os.environ.get("CNN_KERNEL_ISA"):
        assert ORDER.index(isa) <= ORDER.index(os.environ["CNN_KERNEL_ISA"])


@pytest.mark.skipif(not X86_LINUX or "gcc" not in (sysconfig.get_config_var("CC") or ""),
                    reason="the clones are built for x86-64 by gcc")
@pytest.mark.skipif("CNN_NO_TARGET_CLONES" in os.environ.get("CFLAGS", ""),
                    reason="built without clones on purpose")
def test_x86_gcc_build_has_the_clones():
    from cnn._ext import _conv

    assert _conv.kernel_clones_built()


@pytest.mark.skipif(not X86_LINUX, reason="the clones are built for x86-64 (gcc) only")
@pytest.mark.skipif(bool(os.environ.get("CNN_KERNEL_ISA")), reason="CNN_KERNEL_ISA is set here")
def test_kernel_isa_is_the_best_the_cpu_has():
    # the resolver's order is avx512f, avx2, default
    assert cnn.show_config()["kernel_isa"] == _best_isa()


@pytest.mark.skipif(not X86_LINUX, reason="the clones are built for x86-64 (gcc) only")
@pytest.mark.parametrize("cap", ORDER)
def test_cnn_kernel_isa_caps_the_choice(cap):
    out = _child("import cnn; print(cnn.show_config()['kernel_isa'])", CNN_KERNEL_ISA=cap)
    assert out.returncode == 0, out.stderr
    best = _best_isa()
    expected = cap if ORDER.index(cap) <= ORDER.index(best) else best
    assert out.stdout.strip() == expected


def test_bad_cnn_kernel_isa_is_a_clear_error():
    out = _child("import cnn", CNN_KERNEL_ISA="sse9")
    assert out.returncode != 0
    assert "ValueError" in out.stderr and "CNN_KERNEL_ISA" in out.stderr and "'sse9'" in out.stderr


# Every cloned kernel, on odd sizes (vector tails) and both dtypes, saved to an npz.
_RUN_KERNELS = """
import sys
import numpy as np
import cnn
from cnn import functional as F
from cnn._ext import _fused
cnn.set_num_threads(2)
rng = np.random.default_rng(7)
out = {"isa": np.array(cnn.show_config()["kernel_isa"])}
for dt in (np.float32, np.float64):
    name = np.dtype(dt).name
    # 3 x 56 tile slots: the Winograd GEMM kernel's 32-slot steps and its 16-slot tail;
    # 19 output channels: two 8-row groups and a 3-row tail
    x = rng.standard_normal((3, 17, 15, 11)).astype(dt)
    w = rng.standard_normal((19, 17, 3, 3)).astype(dt)
    b = rng.standard_normal(19).astype(dt)
    y = F.conv2d(x, w, b, padding="same", activation="relu", algorithm="winograd")
    dy = rng.standard_normal(y.shape).astype(dt)
    dx, dw, db = F.conv2d_backward(dy, x, w, padding="same", activation="relu", y=y,
                                   algorithm="winograd")
    out.update({f"wino_y_{name}": y, f"wino_dx_{name}": dx, f"wino_dw_{name}": dw,
                f"wino_db_{name}": db})
    # the masked backward products (the parity split's masked rows) with a ReLU output holding
    # NaN, -0.0, +0.0 and negatives, at every top/left padding Winograd takes, odd and even widths
    from cnn._ext import _conv
    for pt, (hm, wm) in ((0, (9, 13)), (1, (8, 6)), (2, (7, 11))):
        xm = rng.standard_normal((3, 5, hm, wm)).astype(dt)
        wmk = rng.standard_normal((6, 5, 3, 3)).astype(dt)
        om = (hm + 2 * pt - 2, wm + 2 * pt - 2)
        ro = rng.standard_normal((3, 6) + om).astype(dt)
        ro.flat[::5] = np.nan
        ro.flat[1::7] = -0.0
        ro.flat[2::9] = 0.0
        dym = rng.standard_normal(ro.shape).astype(dt)
        dxm, dwm, dbm = np.empty_like(xm), np.empty_like(wmk), np.empty(6, dt)
        _conv.conv2d_input_grad_winograd(dym, wmk, ro, dxm, pt, pt, 2)
        _conv.conv2d_weight_grad_winograd(dym, xm, ro, dwm, dbm, pt, pt, 2)
        out.update({f"wino_mask{pt}_dx_{name}": dxm, f"wino_mask{pt}_dw_{name}": dwm,
                    f"wino_mask{pt}_db_{name}": dbm})
    # the im2col weight gradient (float32: the own kernel below 320 columns): 5 filters, 37
    # columns, 90 reduction slots (masked tails of rows, columns and slots); and groups
    xi = rng.standard_normal((3, 4, 11, 9)).astype(dt)
    wi = rng.standard_normal((5, 4, 3, 3)).astype(dt)
    yi = F.conv2d(xi, wi, None, stride=2, padding="same", activation="relu", algorithm="im2col")
    dyi = rng.standard_normal(yi.shape).astype(dt)
    for key, v in zip(("dx", "dw", "db"), F.conv2d_backward(
            dyi, xi, wi, stride=2, padding="same", activation="relu", y=yi, algorithm="im2col")):
        out[f"im2col_{key}_{name}"] = v
    wg = rng.standard_normal((6, 2, 3, 3)).astype(dt)
    dyg = rng.standard_normal((3, 6, 11, 9)).astype(dt)
    for key, v in zip(("dx", "dw", "db"), F.conv2d_backward(dyg, xi, wg, padding="same",
                                                            groups=2)):
        out[f"im2col_groups_{key}_{name}"] = v
    x1 = rng.standard_normal((5, 1, 29, 31)).astype(dt)
    w1 = rng.standard_normal((7, 1, 3, 3)).astype(dt)
    b1 = rng.standard_normal(7).astype(dt)
    for pad in ("same", "valid"):
        out[f"direct_{pad}_{name}"] = F.conv2d(x1, w1, b1, padding=pad, activation="relu",
                                                algorithm="direct")
    # several column blocks of every clone, no ReLU (signed values)
    x1w = rng.standard_normal((3, 1, 9, 45)).astype(dt)
    out[f"direct_wide_{name}"] = F.conv2d(x1w, w1, b1, padding="valid", algorithm="direct")
    # the direct conv with the 2x2 pool in its epilogue (the inference plan's fused path)
    net1 = cnn.Sequential([cnn.layers.Conv2D(7, 3, padding="same", activation="relu"),
                           cnn.layers.MaxPool2D(2)], input_shape=(1, 29, 45), seed=4, dtype=dt)
    x1p = rng.standard_normal((3, 1, 29, 45)).astype(dt)
    out[f"direct_pool_predict_{name}"] = net1.predict(x1p)
    x1p[1, 0, 5, 7] = np.nan                                # the kernel itself: NaN, no ReLU
    yq = np.empty((3, 7, 14, 22), dtype=dt)
    sq = np.empty((2, _fused.scratch_size(_fused.DIRECT, 3, 1, 7, 3, 3, 29, 45)), dtype=dt)
    _fused.conv_pool_forward(x1p, w1, b1, yq, sq, None, _fused.DIRECT, 1, 1, 1, 1, 29, 45,
                             False, 2, 2, 2, 2, 0, 0, 2)
    out[f"direct_pool_nan_{name}"] = yq
    xp = rng.standard_normal((4, 6, 37, 35)).astype(dt)
    xp[0, 0, :4, :4] = 1.0                                  # ties: the first cell wins
    yp, arg = F.maxpool2d(xp, 2, padding="valid")
    out[f"pool_y_{name}"], out[f"pool_arg_{name}"] = yp, arg
    # rows of 7 windows (one masked step), small integers (ties everywhere), signed zeros, a
    # NaN plane (redone by the NaN-aware loop)
    xt = rng.integers(-2, 3, (3, 5, 14, 14)).astype(dt)
    xt[xt == 0] = np.where(rng.random(int((xt == 0).sum())) < 0.5, -0.0, 0.0)
    xt[2, 3, 5, 6] = np.nan
    yt, argt = F.maxpool2d(xt, 2)
    out[f"pool_ties_y_{name}"], out[f"pool_ties_arg_{name}"] = yt, argt
    # rows of 14 windows (the AVX-512F copy's two-register masked step) and of 15 with 'same'
    # padding (the window row starts one cell before the plane's row)
    for shape, padding in (((2, 3, 28, 28), "valid"), ((2, 3, 29, 29), "same")):
        xw = rng.integers(-3, 4, shape).astype(dt)
        yw, argw = F.maxpool2d(xw, 2, padding=padding)
        out[f"pool_{shape[-1]}_y_{name}"], out[f"pool_{shape[-1]}_arg_{name}"] = yw, argw
    for shape in ((6, 5, 13, 11), (37, 9)):                 # S = 143 (lanes + tail), S = 1
        xb = (rng.standard_normal(shape) * 3 + 1).astype(dt)
        gb = rng.standard_normal(shape[1]).astype(dt)
        bb = rng.standard_normal(shape[1]).astype(dt)
        yb, mb, vb = F.batch_norm(xb, gb, bb)
        dyb = rng.standard_normal(shape).astype(dt)
        dxb, dgb, dbb = F.batch_norm_backward(dyb, xb, mb, vb, gb)
        for key, v in (("y", yb), ("mean", mb), ("var", vb), ("dx", dxb), ("dgamma", dgb),
                       ("dbeta", dbb)):
            out[f"bn{len(shape)}_{key}_{name}"] = v
    # the elementwise kernels (_eltwise: ReLU, add, add-into, add + ReLU), past one work item
    from cnn import _ops
    # max |a| (the integer kernel of _fused.h), serial and in parts; a NaN in the second part
    am = rng.standard_normal(200001).astype(dt)
    am[7] = -9.0
    out[f"max_abs_{name}"] = np.array([_fused.max_abs(am, 1), _fused.max_abs(am, 2)])
    am[150000] = np.nan
    out[f"max_abs_nan_{name}"] = np.array([_fused.max_abs(am, 1), _fused.max_abs(am, 2)])
    ea = rng.standard_normal(40000).astype(dt)
    eb = rng.standard_normal(40000).astype(dt)
    ea[::7] = -0.0
    ea[::11] = np.nan
    eacc = ea.copy()
    out.update({f"relu_{name}": _ops.relu(ea), f"add_{name}": _ops.add(ea, eb),
                f"add_into_{name}": _ops.add_into(eacc, eb),
                f"add_relu_{name}": _ops.add_relu(ea, eb, np.empty_like(ea))})
    # the inference plan's fused conv + ReLU + max-pool (its values-only pool is cloned too)
    net = cnn.Sequential([cnn.layers.Conv2D(8, 3, padding="same", activation="relu"),
                          cnn.layers.MaxPool2D(2), cnn.layers.Conv2D(6, 3, activation="relu"),
                          cnn.layers.MaxPool2D(3, stride=2)], input_shape=(3, 23, 21),
                         seed=3, dtype=dt)
    out[f"fused_predict_{name}"] = net.predict(rng.standard_normal((5, 3, 23, 21)).astype(dt))
# the pooled backward of a conv + pool pair (float32; _pool_grad.h): blocks of 3x3 (one chunk
# of 3 rows), 5x5 (rows one at a time), 4x2 (chunks of 2 rows), two channel blocks with a tail;
# columns of 9 (one vector) and 27 taps (two)
for kh, kw, C, need_dx in ((3, 3, 40, True), (5, 5, 32, True), (4, 2, 24, True),
                           (3, 3, 1, False), (3, 3, 3, False)):
    xg = rng.standard_normal((3, C, 11, 10)).astype(np.float32)
    wg = rng.standard_normal((6, C, kh, kw)).astype(np.float32)
    OH, OW = 11 - kh + 3, 10 - kw + 3                          # padding 1 on every side
    zg = _ops.conv2d(xg, wg, None, (1, 1), (1, 1, 1, 1), (OH, OW), False)
    pg = ((2, 2), (2, 2), (0, 0, 0, 0), (OH // 2, OW // 2))
    yg, ag = _ops.maxpool2d(zg, *pg)
    gg = np.where(yg > 0, rng.standard_normal(yg.shape), 0).astype(np.float32)
    if C == 40:  # (past pooled_backward_path's rule: the kernel itself)
        from cnn._ext import _pool_grad
        dxg, dwg, dbg = np.empty_like(xg), np.empty_like(wg), np.empty(6, np.float32)
        bufs = [np.empty(s_, np.float32)
                for s_ in _pool_grad.scratch_shapes(3, C, OH, OW, kh, kw, 1, 1, 2)]
        _pool_grad.conv_pool_backward(gg, ag, xg, wg, dxg, dwg, dbg, OH, OW, 1, 1, 1, 1, *bufs, 2)
    else:
        dxg, dwg, dbg = _ops.conv2d_pooled_backward(gg, ag, xg, wg, (1, 1), (1, 1, 1, 1),
                                                    (OH, OW), need_dx,
                                                    "blocks" if need_dx else "columns")
    key = f"pooled_{kh}{kw}_{C}"
    out.update({f"{key}_dw": dwg, f"{key}_db": dbg})
    if need_dx:
        out[f"{key}_dx"] = dxg
np.savez(sys.argv[1], **out)
"""


@pytest.mark.skipif(not X86_LINUX, reason="the clones are built for x86-64 (gcc) only")
def test_clones_give_bit_identical_results(tmp_path):
    best = _best_isa()
    runs = run_under_clones(_RUN_KERNELS, tmp_path, ORDER[:ORDER.index(best) + 1])
    for isa, got in runs.items():
        assert str(got["isa"]) == isa
    assert len(runs) >= 2 or best == "default"
    ref = runs["default"]
    for isa, got in runs.items():
        for key, value in ref.items():
            if key == "isa":
                continue
            assert got[key].dtype == value.dtype and got[key].shape == value.shape
            assert got[key].tobytes() == value.tobytes(), f"{key} differs: {isa} vs default"

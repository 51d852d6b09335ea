"""The softmax Jacobian of eq. (4), J[i, k] = s_i (delta_ik - s_k), for four logits, and what
the backward pass does with it: dC/dz = J^T g for an upstream gradient g. The bars compare
``cnn.activations.Softmax.backward`` with J^T g (equal; checked here) and with the diagonal
alone, the seed's item 12 (not equal)."""

import matplotlib.pyplot as plt
import numpy as np

from cnn import activations

z = np.array([[1.0, 2.0, 0.5, -1.0]])
g = np.array([[0.3, -1.0, 0.8, 0.2]])
s = activations.softmax(z)
J = np.diag(s[0]) - np.outer(s[0], s[0])
full = activations.Softmax().backward(z, s, g)[0]
np.testing.assert_allclose(full, g[0] @ J, rtol=1e-12, atol=1e-15)
diagonal = g[0] * s[0] * (1 - s[0])
assert not np.allclose(full, diagonal, atol=1e-3)

fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(9, 3.4), gridspec_kw={"width_ratios": [1, 1.3]})
lim = np.abs(J).max()
ax0.imshow(J, cmap="RdBu_r", vmin=-2 * lim, vmax=2 * lim)  # pale: the labels stay legible
for (i, k), v in np.ndenumerate(J):
    ax0.text(k, i, f"{v:.3f}", ha="center", va="center", fontsize=8)
n = J.shape[0]
ax0.set_xticks(range(n), [f"$z_{k + 1}$" for k in range(n)])
ax0.set_yticks(range(n), [f"$s_{i + 1}$" for i in range(n)])
ax0.set_title(r"$J_{ik} = \partial s_i / \partial z_k = s_i(\delta_{ik} - s_k)$", fontsize=9)

x = np.arange(n)
ax1.bar(x - 0.2, full, 0.4, label=r"$J^{\mathsf{T}} g$ (eq. 4): Softmax.backward")
ax1.bar(x + 0.2, diagonal, 0.4, label=r"diagonal only, $g \odot s(1-s)$ (item 12)")
ax1.axhline(0, color="#555555", lw=0.6)
ax1.set_xticks(x, [rf"$\partial C/\partial z_{k + 1}$" for k in x])
ax1.legend(fontsize=7.5, loc="lower right")
ax1.set_title(f"upstream g = {g[0].tolist()}", fontsize=9)
fig.subplots_adjust(left=0.06, right=0.98, top=0.88, bottom=0.12, wspace=0.25)

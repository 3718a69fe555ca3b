"""NumPy implementations of the paper's equations, written from the spec, and
small helpers shared by the tests."""

import math

import keras
import numpy as np
from keras import ops


def softmax(x, axis=-1):
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def moe_query_attention(
    x,
    wq,
    wk,
    wv,
    wr=None,
    bq=None,
    bk=None,
    bv=None,
    padding=None,
    causal=True,
    return_experts=False,
):
    """Eqs. 12-17 with explicit loops over batch, head, expert and position.

    x (B, L, d); wq (d, H, N, k); wk, wv (d, H, k); wr (H, N*k, N).
    Returns out (B, L, H, k) and routing (B, L, H, N), and with
    `return_experts` each expert's output (B, L, H, N, k) (0 at padding).
    """
    b_size, length, _ = x.shape
    _, heads, experts, k = wq.shape
    if padding is None:
        padding = np.ones((b_size, length), bool)
    out = np.zeros((b_size, length, heads, k))
    routing = np.zeros((b_size, length, heads, experts))
    expert_out = np.zeros((b_size, length, heads, experts, k))
    for b in range(b_size):
        for h in range(heads):
            keys = x[b] @ wk[:, h] + (0 if bk is None else bk[h])
            values = x[b] @ wv[:, h] + (0 if bv is None else bv[h])
            for i in range(length):
                allowed = [
                    j
                    for j in range(length)
                    if padding[b, j] and padding[b, i] and (j <= i or not causal)
                ]
                if not allowed:
                    routing[b, i, h] = 1.0 / experts if experts > 1 else 1.0
                    continue
                f = []
                for n in range(experts):
                    q = x[b, i] @ wq[:, h, n] + (0 if bq is None else bq[h, n])
                    s = np.array([q @ keys[j] / np.sqrt(k) for j in allowed])
                    a = softmax(s)
                    f.append(sum(a[t] * values[j] for t, j in enumerate(allowed)))
                f = np.stack(f)  # (N, k)
                expert_out[b, i, h] = f
                if experts == 1:
                    beta = np.ones(1)
                else:
                    beta = softmax(np.concatenate(f) @ wr[h])
                routing[b, i, h] = beta
                out[b, i, h] = (beta[:, None] * f).sum(0)
    if return_experts:
        return out, routing, expert_out
    return out, routing


def facet_gated_scores(states, items, wf, wg, bg):
    """Eqs. 8-11, one head at a time. states (B, H, k); items (C, d)."""
    heads = states.shape[-2]
    gate = softmax(states.reshape(len(states), -1) @ wg + bg)  # (B, H)
    head_scores = np.stack(
        [(items @ wf[h]) @ states[:, h].T for h in range(heads)], axis=1
    )  # (C, H, B)
    head_scores = head_scores.transpose(2, 1, 0)  # (B, H, C)
    return (gate[:, :, None] * head_scores).sum(1), gate, head_scores


def routing_loss(routing, padding):
    """-(mutual information of position and expert) / log N, averaged over
    heads: `routing` `(batch, length, heads, experts)`, `padding` boolean
    `(batch, length)`, True where a position counts."""
    real = routing[padding]  # (positions, heads, experts)
    losses = []
    for head in range(real.shape[1]):
        p = real[:, head]
        each = np.mean([-np.sum(q * np.log(q)) for q in p])
        mean = p.mean(axis=0)
        losses.append((each + np.sum(mean * np.log(mean))) / np.log(p.shape[-1]))
    return np.mean(losses)


def history_candidates(history, target, num_items):
    """Boolean `(num_items,)` (entry `i` is item `i + 1`): False for the ids
    of `history` (0 = none) other than `target`."""
    candidates = np.ones(num_items, bool)
    candidates[[i - 1 for i in history if i and i != target]] = False
    return candidates


def history_excluded_loss(table, vectors, histories, targets, eps=0.0):
    """Mean cross-entropy over the items not in each row's history (its
    target always stays a candidate), with share `eps` spread over those
    candidates. `table` is the item table without the padding row."""
    losses = []
    for vector, history, target in zip(vectors, histories, targets, strict=True):
        logits = table @ np.asarray(vector, "float64")
        candidates = history_candidates(history, target, len(table))
        logits = logits[candidates]
        log_p = logits - logits.max() - np.log(np.exp(logits - logits.max()).sum())
        smoothed = np.full(candidates.sum(), eps / candidates.sum())
        smoothed[candidates[: target - 1].sum()] += 1.0 - eps
        losses.append(-(smoothed * log_p).sum())
    return np.mean(losses)


def next_item_batch(num_items, max_len, seed=0, batch=6):
    """Left-padded histories `(batch, max_len)` and their next-item targets
    (0 at padding; the last position's target is a fresh random item)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(1, num_items + 1, size=(batch, max_len)).astype("int32")
    for row, length in enumerate(rng.integers(2, max_len + 1, size=batch)):
        x[row, : max_len - length] = 0
    y = np.zeros_like(x)
    y[:, :-1] = x[:, 1:]
    y[x == 0] = 0
    y[:, -1] = rng.integers(1, num_items + 1, size=batch)
    return x, y


def dropout_rates(model):
    """The set of rates of every `Dropout` layer inside `model`."""
    return {
        layer.rate
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, keras.layers.Dropout)
    }


def load_script(path):
    """The Python file at `path` (an example or benchmark script) as a module."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def small_recipe_data():
    """The small synthetic dataset the training and recipe-folder tests share."""
    from keras_fame.datasets import load

    return load(
        "synthetic", num_users=150, num_items=60, min_length=8, max_length=16, seed=0
    )


def recipe_folder(data, folder, **fields):
    """A recipe work folder as `examples/train_sports.py` leaves it after
    SASRec's stage (`config.json`, `sasrec/`), for a small `TrainConfig` of
    `fields`; returns the SASRec stage's results."""
    import json

    from keras_fame.training import TrainConfig, config_record, train_sasrec

    config = TrainConfig(
        **{
            "hidden_dim": 16,
            "num_heads": 2,
            "max_len": 16,
            "batch_size": 32,
            "eval_batch_size": 128,
            "prefixes": False,
            **fields,
        }
    )
    (folder / "config.json").write_text(json.dumps(config_record(config)))
    _, results = train_sasrec(data, config, folder, verbose=0)
    return results


# --------------------------------------------- SASRec and FAME forward passes
# Weights are read by name and the maths redone in float64 NumPy (see
# tests/test_references.py).


def as_float64(x):
    return np.asarray(ops.convert_to_numpy(x), "float64")


def weights_by_name(layer):
    """`{name: float64 array}` of `layer`'s weights, by their own names."""
    return {w.path.split("/")[-1]: as_float64(w) for w in layer.weights}


def randomize(layer, rng, scale=0.4):
    """Weights far from their initial values (non-zero biases, LayerNorm
    gains away from 1), so that every term shows in the output."""
    for weight in layer.trainable_weights:
        base = 1.0 if weight.path.endswith("gamma") else 0.0
        value = base + rng.normal(0.0, scale, size=weight.shape)
        weight.assign(value.astype("float32"))


_erf = np.vectorize(math.erf)


def gelu(x):
    """The exact GELU (Keras' default, `approximate=False`)."""
    return 0.5 * x * (1.0 + _erf(x / np.sqrt(2.0)))


def relu(x):
    return np.maximum(x, 0.0)


def layer_norm(x, weights, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weights["gamma"] + weights["beta"]


def multi_head_attention(x, attention, padding):
    """Causal multi-head self-attention, per head: `softmax(q k^T / sqrt(k))
    v` over the real positions up to the query's, zero at padding queries.

    x (B, L, d); `attention` the weights of the one-expert
    `MoEQueryAttention`. Returns (B, L, H, k).
    """
    wq = attention["query_kernel"][:, :, 0]  # (d, H, k)
    bq = attention["query_bias"][:, 0]  # (H, k)
    q = np.einsum("bld,dhk->bhlk", x, wq) + bq[None, :, None]
    k = np.einsum("bld,dhk->bhlk", x, attention["key_kernel"])
    k = k + attention["key_bias"][None, :, None]
    v = np.einsum("bld,dhk->bhlk", x, attention["value_kernel"])
    v = v + attention["value_bias"][None, :, None]
    length, head_dim = x.shape[1], q.shape[-1]
    logits = q @ np.swapaxes(k, -1, -2) / np.sqrt(head_dim)  # (B, H, L, L)
    causal = np.tril(np.ones((length, length), bool))
    allowed = causal[None, None] & padding[:, None, None, :]
    probs = softmax(np.where(allowed, logits, -np.inf))
    probs = np.nan_to_num(probs)  # left-padding queries see no key at all
    out = (probs @ v).transpose(0, 2, 1, 3)  # (B, L, H, k)
    return out * padding[:, :, None, None]


def transformer_block(x, weights, padding, eps):
    """SASRec's post-LayerNorm block on (B, L, d) with weights by name."""
    heads = multi_head_attention(x, weights["attention"], padding)
    attended = np.einsum("blhk,hkd->bld", heads, weights["output_kernel"])
    y = layer_norm(
        x + attended + weights["output_bias"], weights["attention_norm"], eps
    )
    inner, outer = weights["ffn_inner"], weights["ffn_outer"]
    ffn = gelu(y @ inner["kernel"] + inner["bias"]) @ outer["kernel"] + outer["bias"]
    return layer_norm(y + ffn, weights["ffn_norm"], eps)


def block_weights(block):
    weights = {
        "output_kernel": as_float64(block.output_kernel),
        "output_bias": as_float64(block.output_bias),
    }
    for name in ("attention", "attention_norm", "ffn_inner", "ffn_outer", "ffn_norm"):
        weights[name] = weights_by_name(getattr(block, name))
    return weights


def fame_block(x, block, padding, eps):
    """FAME's block: Eqs. 12-17 (`tests/reference.py`), the attention
    residual and LayerNorm per head (when the block has them), Eq. 7's FFN'."""
    a = weights_by_name(block.attention)
    heads, routing = moe_query_attention(
        x,
        a["query_kernel"],
        a["key_kernel"],
        a["value_kernel"],
        a.get("router_kernel"),
        a["query_bias"],
        a["key_bias"],
        a["value_bias"],
        padding=padding,
    )
    b_size, length, _, head_dim = heads.shape
    z = heads
    if block.attention_residual:
        x_heads = x.reshape(b_size, length, -1, head_dim)
        z = layer_norm(x_heads + heads, weights_by_name(block.attention_norm), eps)
    inner, outer = weights_by_name(block.ffn_inner), weights_by_name(block.ffn_outer)
    ffn = relu(z @ inner["kernel"] + inner["bias"]) @ outer["kernel"] + outer["bias"]
    return layer_norm(z + ffn, weights_by_name(block.ffn_norm), eps), routing


def embed(model, ids):
    """Item + position embedding, then the embedding LayerNorm."""
    table = as_float64(model.item_embedding.embeddings)
    positions = as_float64(model.position_embedding.embeddings)
    max_len, length = len(positions), ids.shape[1]
    if model.position_anchor == "end":
        position_ids = np.broadcast_to(np.arange(max_len - length, max_len), ids.shape)
    else:
        first = np.array([np.flatnonzero(row)[0] if row.any() else 0 for row in ids])
        position_ids = np.clip(np.arange(length)[None] - first[:, None], 0, None)
    x = table[ids] + positions[position_ids]
    return layer_norm(
        x, weights_by_name(model.embedding_norm), model.layer_norm_epsilon
    )


def scores(vectors, table):
    """`vectors . E^T` with the padding column at -1e9."""
    out = vectors @ table.T
    out[..., 0] = -1e9
    return out


def sasrec_forward(model, ids):
    """SASRec's last-block output (B, L, d) for `ids`."""
    padding = ids != 0
    x = embed(model, ids)
    for block in model.blocks:
        x = transformer_block(
            x, block_weights(block), padding, model.layer_norm_epsilon
        )
    return x


def fame_forward(model, ids):
    """FAME's scoring vectors (B, L, d), gate (B, L, H), routing and head
    scores (B, L, H, C)."""
    padding = ids != 0
    eps = model.layer_norm_epsilon
    x = embed(model, ids)
    for block in model.blocks:
        x = transformer_block(x, block_weights(block), padding, eps)
    states, routing = fame_block(x, model.fame_block, padding, eps)
    s = weights_by_name(model.scorer)
    b_size, length, heads, head_dim = states.shape
    table = as_float64(model.item_embedding.embeddings)
    final, gate, head_scores = facet_gated_scores(
        states.reshape(-1, heads, head_dim),
        table,
        s["facet_kernel"],
        s["gate_kernel"],
        s["gate_bias"],
    )
    # The scoring vector: final = vector . E^T for every item, so solve it
    # from the per-head queries (sum_h g_h W_f^(h) F^(h)).
    vectors = np.einsum(
        "nh,nhk,hdk->nd", gate, states.reshape(-1, heads, head_dim), s["facet_kernel"]
    )
    np.testing.assert_allclose(vectors @ table.T, final, rtol=1e-9, atol=1e-9)
    return {
        "vectors": vectors.reshape(b_size, length, -1),
        "gate": gate.reshape(b_size, length, heads),
        "routing": routing,
        "head_scores": head_scores.reshape(b_size, length, heads, -1),
        "scores": final.reshape(b_size, length, -1),
    }


def run_on_jax(script: str, timeout: int):
    """Runs `script` in a fresh Python on the JAX backend (from the checkout)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=str(root))
    return subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=timeout,
    )

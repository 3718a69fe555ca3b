"""NumPy implementations of the paper's equations, written from the spec, and
small helpers shared by the tests."""

import keras
import numpy as np


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

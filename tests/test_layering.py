"""Layers and models speak keras.ops only; TensorFlow stays in the data/export side."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "keras_fame"
BACKEND_NEUTRAL = sorted((PACKAGE / "layers").glob("*.py")) + sorted(
    (PACKAGE / "models").glob("*.py")
)


@pytest.mark.parametrize(
    "path", BACKEND_NEUTRAL, ids=lambda p: f"{p.parent.name}/{p.name}"
)
def test_no_backend_specific_imports(path):
    tree = ast.parse(path.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
            if node.module.startswith("keras_fame."):
                sub = node.module.split(".")[1]
                assert sub in {"layers", "models", "vocabulary"}, (
                    f"{path.name} imports keras_fame.{sub}"
                )
    assert not imported & {"tensorflow", "jax", "torch", "tf_keras"}, imported


def test_backend_neutral_modules_exist():
    names = {p.name for p in BACKEND_NEUTRAL}
    assert {
        "moe_query_attention.py",
        "facet_gated_scorer.py",
        "fame.py",
        "sasrec.py",
    } <= names

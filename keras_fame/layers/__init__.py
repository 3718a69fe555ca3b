"""Keras layers of FAME (keras.ops only: they run on any Keras backend)."""

from keras_fame.layers.facet_gated_scorer import FacetGatedScorer
from keras_fame.layers.fame_block import FAMEBlock
from keras_fame.layers.moe_query_attention import MoEQueryAttention
from keras_fame.layers.position_embedding import PositionEmbedding
from keras_fame.layers.transformer_block import TransformerBlock

__all__ = [
    "FAMEBlock",
    "FacetGatedScorer",
    "MoEQueryAttention",
    "PositionEmbedding",
    "TransformerBlock",
]

"""Sequential recommendation models (keras.ops only)."""

from keras_fame.models.base import PositionEmbedding, SequentialRecommender
from keras_fame.models.fame import FAME
from keras_fame.models.sasrec import SASRec

__all__ = ["FAME", "PositionEmbedding", "SASRec", "SequentialRecommender"]

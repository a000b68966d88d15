"""Layers built from ops (graph builders), regularizers, and networks reused as layers."""
from .layers import activation_op, dense
from .modules import (Activation, AvgPool2D, Conv2D, Dense, Dropout, Flatten, GaussianNoise, Layer,
                      MaxPool2D, Sequential)
from .norm import BatchNorm, LayerNorm, batch_norm, layer_norm
from .regularize import dropout, gaussian_noise, weight_noise, weight_penalty, weights
from .reuse import GraphLayer, as_layer

__all__ = ["dense", "activation_op", "Layer", "Dense", "Conv2D", "MaxPool2D", "AvgPool2D", "Flatten",
           "Dropout", "GaussianNoise", "Activation", "Sequential", "dropout", "gaussian_noise",
           "weight_noise", "weight_penalty", "weights", "GraphLayer", "as_layer", "batch_norm", "layer_norm",
           "BatchNorm", "LayerNorm"]

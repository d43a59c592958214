"""The networks: the seed CNN and the zoo, as Flax NNX modules, and their convolution kernels."""

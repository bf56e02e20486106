"""The training samples: augmented crops of the training slices with their targets (boundary mask or affinities)
and weights, and the stream that hands them to Keras."""

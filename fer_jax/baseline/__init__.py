"""The PyTorch baseline of the same networks, and weight porting between the two frameworks."""

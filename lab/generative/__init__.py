"""What generators share: the ImageGenerator base, sample grids and image folders, and sample
metrics measured in a reference classifier's features."""

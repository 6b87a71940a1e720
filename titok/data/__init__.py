"""What training and the harness share: image sets (folders, ImageNet layout, built-in sets), their
preparation, and atomic file writing. It sits at the bottom of the project so that both may use it."""

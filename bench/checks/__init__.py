"""What `titok-bench doctor` checks: the installed stack, a folder or file of samples."""

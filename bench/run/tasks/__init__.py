"""What a suite's [[run]] entries do: `speed` (throughput and memory), `recon` (rFID, PSNR, SSIM on an image
set) and `gen` (class-conditional samples -> gFID, IS). Each task yields result records."""

"""Pictures: attention overlays, curves, saliency panels."""

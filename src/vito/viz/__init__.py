"""Pictures several places draw: attention overlays, curves, and the one PNG writer. Imports nothing from
eval/ or curate/ (each benchmark draws its own pictures in its package)."""

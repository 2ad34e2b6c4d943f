"""Video benchmarks: DAVIS label propagation (`vito eval davis`) and UCF-101 action recognition
(`vito eval ucf101`)."""

# the command modules: importing the package registers their evaluations (vito.eval.core.registry.discover)
from vito.eval.video import davis, ucf101  # noqa: F401

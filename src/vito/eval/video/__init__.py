"""Video benchmarks: DAVIS label propagation (`vito eval davis`) and UCF-101 action recognition
(`vito eval ucf101`)."""

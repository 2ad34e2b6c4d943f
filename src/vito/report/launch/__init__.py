"""How ``vito report`` runs its jobs (pretraining runs and evaluation cells): in this process one after another
(``local``), or as submitit jobs on a SLURM cluster (``submitit``), preemption-safe. ``jobs`` (the job and the
launcher seam), ``settings`` (the ``launcher:`` block and its command-line options), ``ledger`` (``DIR/jobs/``),
``cluster`` (the submitit launcher), ``preemption`` (the requeueing job wrapper), ``status`` (``--status``)."""

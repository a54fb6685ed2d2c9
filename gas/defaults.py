"""The embedded defaults (what `gas search --budget 2.5G` does when told nothing else) and the choices beside them.

Plain values only: the command line reads its choice lists here without importing torch or Optuna.
"""

#: The space `gas search`, `gas sample` and the proxy use when none is named.
DEFAULT_SPACE = "turbovit"

#: Trained trials of a search: two 1-thread trials at a time finish this many in about ten minutes on
#: a 2-core machine with the default proxy (experiments/results/default_search.md).
DEFAULT_TRIALS = 40

#: Seeds a front candidate trains with before it counts, and the most it may race up to
#: (gas.search.replicates). Each seed is a trial's worth of `--trials`.
DEFAULT_REPLICATES = 2
DEFAULT_MAX_SEEDS = 4

#: Proxy trials that share one GPU when `gas search` is not given `--gpus-per-trial`. One trial of the
#: GPU proxy (gas.evaluate.proxy.GPU_PROXY) cannot keep a GPU busy: each step is a few hundred small
#: kernels that Python launches one at a time, so the device idles between them, and trials side by side
#: fill those gaps. 4 is an estimate, to be confirmed by experiments/gpu_check (trials/hour and the
#: device's busy share at 1, 2, 4 and 8 trials per GPU, experiments/results/gpu_check.md).
TRIALS_PER_GPU = 4

#: Optuna samplers `gas search --sampler` takes (gas.search.config.make_sampler builds them).
SAMPLERS = ("tpe", "nsga2", "gp", "random")

#: The front's cost axis against accuracy.
OBJECTIVE_AXES = ("flops", "latency", "params")

#: How a proxy scores a genome: trained for a few epochs, or a zero-cost score at initialisation.
EVALUATORS = ("train", "zero-cost")

#: Devices, dtypes and runtimes latency is measured on (gas.latency.device).
LATENCY_DEVICES = ("cpu", "cuda")
LATENCY_DTYPES = ("fp32", "bf16")
LATENCY_RUNTIMES = ("torch", "onnxruntime")

#: What `gas compare` retrains when not told: the study's most accurate pick, against TurboViT's published
#: scale and Hiera-T scaled to the study's limits by width and by depth (gas.compare).
COMPARE_PICKS = ("best",)
COMPARE_AGAINST = ("turbovit", "hiera_tiny@width", "hiera_tiny@depth")

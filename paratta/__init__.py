"""paratta: parallel sampling of diffusion models with Triangular Anderson Acceleration (ParaTAA).

Tang et al., "Accelerating Parallel Sampling of Diffusion Models", ICML 2024 (arXiv 2402.09970).
Importing paratta imports torch only; diffusers is loaded when a diffusers model is asked for.

``plan(problem, config, device, group)`` makes a run's settings concrete once (``Plan``);
``solve``/``run`` take a plan, or a config which they plan first. ``pose(model, request, config,
device, group)`` makes a whole run once (``Run``: its problem, plan, sampler and work bound), as the
CLI, ``ParaTAAPipeline`` and the app do.
"""

from .config import SolverConfig
from .models.diffusers.pipeline import ParaTAAPipeline, ParaTAAPipelineOutput
from .planning.plan import Plan, plan
from .planning.pose import Run, pose, run, solve
from .problem import Problem, Request, make_problem
from .protocol import ModelDefaults
from .registry import BUILTIN_MODELS, load_model, model_defaults
from .samplers import SAMPLERS, coefficients
from .schedule import Schedule
from .sequential import iterate_sequential, sample_sequential
from .solver import Iterate

__all__ = [
    "BUILTIN_MODELS",
    "Iterate",
    "ModelDefaults",
    "ParaTAAPipeline",
    "ParaTAAPipelineOutput",
    "Plan",
    "Problem",
    "Request",
    "Run",
    "SAMPLERS",
    "Schedule",
    "SolverConfig",
    "coefficients",
    "iterate_sequential",
    "load_model",
    "make_problem",
    "model_defaults",
    "plan",
    "pose",
    "run",
    "sample_sequential",
    "solve",
]

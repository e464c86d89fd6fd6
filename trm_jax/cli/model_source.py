"""Where ``evaluate`` and ``predict`` get their model: a run directory, a checkpoint or a PyTorch file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trm_jax.cli.errors import UsageError


def _require_torch() -> None:
    """Fails with a one-line install hint when the optional PyTorch dependency is missing."""
    try:
        import torch  # noqa: F401, PLC0415 - optional dependency
    except ImportError:
        raise UsageError("--torch needs PyTorch, which is not installed: pip install 'trm-jax[torch]'") from None


def resolve_model(args: argparse.Namespace, overrides: list[str]):
    """(config, model config, optim config, dataset path, state, source) for evaluate/predict.

    ``args`` holds the model-source options (``workdir``, ``checkpoint``, ``torch``, ``config``,
    ``step``, ``dataset``); benchmarks call it with such a namespace too.
    """
    import jax  # noqa: PLC0415

    from trm_jax import configs as configs_lib  # noqa: PLC0415
    from trm_jax.data.format import read_metadata  # noqa: PLC0415
    from trm_jax.train import loop, parallel  # noqa: PLC0415
    from trm_jax.train.attention_check import resolve_attention_impl  # noqa: PLC0415
    from trm_jax.train.checkpoint import Checkpointer  # noqa: PLC0415

    sources = [name for name in ("workdir", "checkpoint", "torch") if getattr(args, name)]
    if len(sources) != 1:
        raise UsageError("give exactly one of --workdir, --checkpoint, --torch")
    if args.torch:
        _require_torch()
    run_config = None
    if args.workdir:
        run_config = configs_lib.config_from_json(Path(args.workdir) / loop.CONFIG_NAME)
        ckpt_dir = Path(args.workdir) / loop.CHECKPOINT_DIR
    elif args.checkpoint:
        ckpt_dir = Path(args.checkpoint)
        beside = ckpt_dir.parent / loop.CONFIG_NAME
        if beside.is_file():
            run_config = configs_lib.config_from_json(beside)
    if args.config:
        config = configs_lib.load_config(args.config, overrides)
        if run_config is not None:  # the carry is sized for the run's batch
            config.optim.global_batch_size = run_config.optim.global_batch_size
    elif run_config is not None:
        config = configs_lib.apply_overrides(run_config, overrides)
    else:
        raise UsageError(f"--{sources[0]} needs --config (the model's config file)")
    if args.dataset:
        config.data.dataset_dir = args.dataset
    configs_lib.validate_config(config)

    data_path = loop.dataset_dir(config, args.workdir or ".")
    metadata = None
    if (data_path / "test" / "dataset.json").is_file():
        metadata = read_metadata(data_path / "test")
    elif any(config.model[name] == 0 for name in configs_lib.DATASET_FIELDS):
        raise loop.RunDirError(
            f"dataset directory {data_path} does not exist (needed for the model's "
            f"{', '.join(configs_lib.DATASET_FIELDS)})"
        )
    model_config = configs_lib.model_config(config, metadata)
    impl, warning = resolve_attention_impl(model_config)  # the kernel a run would use here
    if warning:
        print(warning, file=sys.stderr)
    model_config = model_config.replace(attention_impl=impl)
    optim_config = configs_lib.optim_config(config, total_steps=1)  # the schedule is unused here
    mesh = parallel.make_mesh()

    if args.torch:
        from trm_jax.interop import load_torch_checkpoint  # noqa: PLC0415

        variables = load_torch_checkpoint(args.torch, model_config)
        state = parallel.create_sharded_train_state(
            model_config, optim_config, jax.random.key(0), mesh, variables=variables
        )
        return config, model_config, optim_config, data_path, state, f"PyTorch checkpoint {args.torch}"
    if not ckpt_dir.is_dir():
        raise loop.RunDirError(f"checkpoint directory {ckpt_dir} does not exist")
    checkpointer = Checkpointer(ckpt_dir, max_to_keep=None, async_save=False)
    try:
        state, _ = loop.restore_checkpoint(checkpointer, model_config, optim_config, mesh, args.step)
        step = args.step if args.step is not None else checkpointer.latest_step()
    finally:
        checkpointer.close()
    return config, model_config, optim_config, data_path, state, f"{ckpt_dir} step {step}"

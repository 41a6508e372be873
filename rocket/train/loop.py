"""The training loop: data -> sharded, jitted train_step -> metrics, eval, checkpoints, sample.

`train(cfg)` is what `python -m rocket.train` runs. It is restartable: if the work directory has a
checkpoint, the run resumes from the latest complete one (parameters, optimizer state, step, RNG
and the data iterator's position), so a resumed run continues the uninterrupted run's loss curve.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from rocket import parallel
from rocket.config import ConfigError, ExperimentConfig, to_dict
from rocket.data import build_data
from rocket.data.build import corpus_options
from rocket.data.decomposition import DecompositionSpec
from rocket.decode import ModelStep, SamplerConfig, generate
from rocket.interop.training import hf_experiment, initial_params, tokenizer_name
from rocket.models import Transformer, flops_per_token, param_count
from rocket.train.checkpoint import Checkpointer, CheckpointError, run_checkpoint_dir
from rocket.train.metrics import MetricWriter, StepTimer, bits_per_byte, matmul_dtype, mfu, peak_flops
from rocket.train.optim import make_optimizer
from rocket.train.resume import checked_changes
from rocket.train.step import TrainState, init_state, make_eval_step, make_train_step
from rocket.train.transforms import LossTransforms

_log = logging.getLogger(__name__)


@dataclasses.dataclass
class Trainer:
    """The compiled pieces of a run: model, optimizer, mesh, shardings and jitted steps."""

    cfg: ExperimentConfig
    model: Transformer
    mesh: jax.sharding.Mesh
    state_shardings: Any
    init_fn: Any
    train_step: Any
    eval_step: Any
    schedule: Any

    @classmethod
    def build(cls, cfg: ExperimentConfig, mesh: jax.sharding.Mesh | None = None) -> Trainer:
        mesh = mesh or parallel.make_mesh(cfg.parallel)
        model = Transformer(cfg.model)
        tx, schedule = make_optimizer(cfg.optim, cfg.train.steps, cfg.data.batch_size * cfg.data.seq_len)
        transforms = LossTransforms.from_config(cfg.loss, cfg.model)
        ema = transforms.ema_decay is not None
        boxed_init = lambda rng: init_state(model, tx, rng, cfg.data.seq_len, ema=ema)
        with nn.logical_axis_rules(parallel.DEFAULT_RULES):
            abstract = jax.eval_shape(boxed_init, jax.random.key(0))
            shardings = parallel.logical_to_shardings(abstract, mesh)
        batch_sh = parallel.batch_sharding(mesh)
        replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        init_fn = jax.jit(lambda rng: nn.meta.unbox(boxed_init(rng)), out_shardings=shardings)
        step_fn = make_train_step(model, tx, microbatches=cfg.train.microbatches, transforms=transforms)

        def seeded_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
            """The step's RNG is derived from the checkpointed base key and the step number."""
            rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
            return step_fn(state, batch, rng)

        train_step = jax.jit(
            _with_rules(seeded_step),
            in_shardings=(shardings, batch_sh),
            out_shardings=(shardings, replicated),
            donate_argnums=(0,),
        )
        eval_step = jax.jit(
            _with_rules(make_eval_step(model)),
            in_shardings=(shardings.params, batch_sh),
            out_shardings=replicated,
        )
        return cls(cfg, model, mesh, shardings, init_fn, train_step, eval_step, schedule)

    def init(self, seed: int) -> TrainState:
        with jax.set_mesh(self.mesh):
            return self.init_fn(jax.random.key(seed))

    def abstract_state(self) -> Any:
        """ShapeDtypeStructs with the run's shardings (what checkpoints restore into)."""
        shapes = jax.eval_shape(self.init_fn, jax.random.key(0))
        return jax.tree.map(
            lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, self.state_shardings
        )

    def step(self, state: TrainState, local_batch: dict[str, np.ndarray]) -> tuple[TrainState, dict]:
        batch = parallel.global_batch(local_batch, self.mesh)
        with jax.set_mesh(self.mesh):
            return self.train_step(state, batch)

    def evaluate(self, params: Any, batches: list[dict[str, np.ndarray]]) -> dict[str, float]:
        """Validation loss (nats/token) and bits/byte over `batches` (causal routing)."""
        totals = {"nats": 0.0, "tokens": 0.0, "bytes": 0.0}
        with jax.set_mesh(self.mesh):
            sums = [self.eval_step(params, parallel.global_batch(b, self.mesh)) for b in batches]
        for s in jax.device_get(sums):
            for k in totals:
                totals[k] += float(s[k])
        return {
            "loss": totals["nats"] / max(totals["tokens"], 1.0),
            "bits_per_byte": bits_per_byte(totals["nats"], totals["bytes"]),
        }


def _with_rules(fn):
    """Traces `fn` under rocket's logical axis rules, so activation constraints shard."""

    def wrapped(*args):
        with nn.logical_axis_rules(parallel.DEFAULT_RULES):
            return fn(*args)

    return wrapped


def sample_text(model: Transformer, params: Any, tokenizer: Any, cfg: ExperimentConfig, seed: int) -> str:
    """Generates `train.sample_tokens` tokens after `train.sample_prompt` with the run's sampler."""
    tc = cfg.train
    prompt = np.concatenate([[tokenizer.bos_id], tokenizer.encode(tc.sample_prompt)]).astype(np.int32)
    # Positions past the training length were never trained: stay within data.seq_len.
    n_new = min(tc.sample_tokens, min(cfg.data.seq_len, cfg.model.max_seq_len) - len(prompt))
    if n_new <= 0:
        return ""
    sampler = (
        SamplerConfig(greedy=True)
        if tc.sample_temperature == 0
        else SamplerConfig(temperature=tc.sample_temperature, top_k=tc.sample_top_k, top_p=tc.sample_top_p)
    )
    if jax.process_count() > 1:  # params span other hosts' devices: gather (a collective)
        from jax.experimental import multihost_utils

        params = multihost_utils.process_allgather(params, tiled=True)
    else:
        params = jax.device_get(params)
    out = generate(
        ModelStep(model, {"params": params}),
        jnp.asarray(prompt)[None],
        jnp.array([len(prompt)]),
        jax.random.key(seed),
        max_new_tokens=n_new,
        sampler=sampler,
    ).tokens
    return tc.sample_prompt + tokenizer.decode(np.asarray(out[0]))


def _check_vocab(cfg: ExperimentConfig, vocab: int) -> None:
    if cfg.model.vocab_size < vocab:
        raise ConfigError(
            "model.vocab_size",
            f"{cfg.model.vocab_size} is smaller than the "
            f"{cfg.data.tokenizer!r} tokenizer's vocabulary of {vocab}; set --config.model.vocab_size={vocab}",
        )
    mask_id = cfg.model.vocab_size - 1 if cfg.loss.meap_mask_id < 0 else cfg.loss.meap_mask_id
    if cfg.loss.meap_rate > 0 and mask_id < vocab:
        raise ConfigError(
            "loss.meap_mask_id",
            f"MEAP's [MASK] id {mask_id} is a tokenizer id (vocabulary "
            f"{vocab}); grow model.vocab_size past {vocab} (the default mask id is vocab_size - 1)",
        )


class _Reporter:
    """Train metrics: pulled to the host one logged step late (so dispatch runs ahead of the
    device), timed, checked for NaN, written (TensorBoard + JSONL) and shown on the progress bar."""

    def __init__(
        self,
        writer: MetricWriter,
        bar: Any,
        schedule: Any,
        fpt: float,
        peak: float | None,
        tokens_per_step: int,
        start: int,
    ):
        self.writer, self.bar, self.schedule = writer, bar, schedule
        self.fpt, self.peak, self.tokens_per_step = fpt, peak, tokens_per_step
        self.timer = StepTimer()
        self.timer.start()
        self.timed_until = start  # the last step whose compute time the timer has seen
        self.pending: tuple[int, Any] | None = None  # (step, metrics still on device)

    def log_later(self, step: int, metrics: Any) -> None:
        self.flush()
        self.pending = (step, metrics)

    def flush(self) -> None:
        if self.pending is None:
            return
        step, metrics = self.pending
        self.pending = None
        m = {k: float(v) for k, v in jax.device_get(metrics).items()}  # blocks until `step` is done
        n = step - self.timed_until
        m.update(self.timer.lap(n * self.tokens_per_step, n))
        self.timed_until = step
        m["lr"] = float(self.schedule(step - 1))
        m["mfu"] = mfu(self.fpt, m["tokens_per_sec"], self.peak, jax.device_count())
        if not np.isfinite(m["loss"]):
            raise FloatingPointError(f"loss is {m['loss']} at step {step}; lower optim.lr or check the data")
        self.writer.write_scalars(step, {k: v for k, v in m.items() if v is not None})
        self.bar.set_postfix(
            loss=f"{m['loss']:.3f}", bpb=f"{m['bits_per_byte']:.3f}", tok_s=f"{m['tokens_per_sec']:.0f}"
        )

    def resume_timing(self, step: int) -> None:
        """After an eval or checkpoint pause: don't count it as step time."""
        self.timer.start()
        self.timed_until = step


def _build_data(cfg: ExperimentConfig) -> Any:
    dc, n_proc = cfg.data, jax.process_count()
    if dc.batch_size % n_proc:
        raise ConfigError("data.batch_size", f"{dc.batch_size} is not divisible by {n_proc} processes")
    data = build_data(
        dc.corpus,
        tokenizer_name(cfg),
        seq_len=dc.seq_len,
        batch_size=dc.batch_size // n_proc,
        seed=cfg.train.seed,
        spm_vocab_size=dc.spm_vocab_size,
        eval_batches=dc.eval_batches,
        shard_index=jax.process_index(),
        shard_count=n_proc,
        decomposition=DecompositionSpec(dc.dd_min_log2, dc.dd_curriculum, dc.dd_cycles)
        if dc.decomposition
        else None,
        shuffle_window=dc.shuffle_window,
        **corpus_options(dc),
    )
    _check_vocab(cfg, data.tokenizer.vocab_size)
    return data


def _corpus_size(stats: dict[str, Any]) -> str:
    if stats["docs"] is None:
        return "streamed"
    return f"{stats['docs']} train docs, {stats['bytes'] / 1e6:.1f} MB"


def _restore_or_init(
    cfg: ExperimentConfig, trainer: Trainer, ckpt: Checkpointer, data: Any, say
) -> TrainState:
    """The latest complete checkpoint (params, optimizer, step, RNG, this host's data position) or
    a fresh state."""
    if ckpt.latest_step() is None:
        state = trainer.init(cfg.train.seed)
        if not cfg.model.init_from:
            return state
        params = initial_params(cfg, trainer.mesh)  # fine-tuning: start from a HF checkpoint
        say(f"initialised from {cfg.model.init_from}")
        return dataclasses.replace(
            state, params=params, ema_params=None if state.ema_params is None else params
        )
    changes = checked_changes(cfg, ckpt, lambda c: Trainer.build(c, trainer.mesh).abstract_state())
    state, data_state, _ = ckpt.restore(None, trainer.abstract_state())
    per_host = data_state["processes"]
    if len(per_host) != jax.process_count():
        raise CheckpointError(
            f"checkpoint in {ckpt.directory} was written by {len(per_host)} processes, this run has "
            f"{jax.process_count()}: the data positions can't be mapped; resume with the same process count"
        )
    data.train.set_state(per_host[jax.process_index()])
    say(f"resumed from {ckpt.directory} at step {int(state.step)}")
    if changes:
        say(
            f"warning: {len(changes)} config field(s) differ from the checkpoint's (--resume_config=saved "
            "reuses its config): " + "; ".join(changes)
        )
    return state


def train(cfg: ExperimentConfig) -> dict[str, Any]:
    """Runs (or resumes) the experiment; returns the final metrics and where outputs went."""
    parallel.maybe_initialize_distributed()
    cfg = hf_experiment(cfg)  # model.init_from: the architecture of the HF checkpoint
    tc, dc = cfg.train, cfg.data
    lead = jax.process_index() == 0
    say = tqdm.write if lead else (lambda *a, **k: None)  # tqdm.write keeps the progress bar intact
    data = _build_data(cfg)
    trainer = Trainer.build(cfg)
    workdir = os.path.abspath(tc.workdir)
    ckpt_dir, log_dir = run_checkpoint_dir(workdir), os.path.join(workdir, "logs")
    ckpt = Checkpointer(ckpt_dir, keep=tc.keep_checkpoints)
    writer = MetricWriter(log_dir, enabled=lead)
    writer.write_hparams(to_dict(cfg))
    state = _restore_or_init(cfg, trainer, ckpt, data, say)
    start = int(state.step)

    fpt = flops_per_token(cfg.model, dc.seq_len)
    peak = peak_flops(jax.devices()[0], matmul_dtype(cfg.model.dtype))
    say(
        f"model: {param_count(cfg.model) / 1e6:.2f}M params, {fpt / 1e6:.1f} MFLOPs/token (train); "
        f"mesh {dict(trainer.mesh.shape)}; corpus {dc.corpus!r}: " + _corpus_size(data.stats["train"])
    )
    if peak is None:
        say(f"MFU: n/a (no peak FLOP/s known for '{jax.devices()[0].device_kind}'; set ROCKET_PEAK_FLOPS)")

    bar = tqdm(
        total=tc.steps,
        initial=start,
        disable=not (tc.progress and lead),
        dynamic_ncols=True,
        mininterval=1.0,
        desc="train",
    )
    report = _Reporter(writer, bar, trainer.schedule, fpt, peak, dc.batch_size * dc.seq_len, start)
    eval_result: dict[str, float] = {}
    profile = range(start + 3, min(start + 3 + tc.profile_steps, tc.steps + 1))  # past compilation
    for step in range(start + 1, tc.steps + 1):
        if profile and step == profile.start:
            jax.profiler.start_trace(log_dir)
        state, metrics = trainer.step(state, next(data.train))
        if profile and step == profile.stop - 1:
            jax.block_until_ready(state)
            jax.profiler.stop_trace()
            say(f"profile of steps {profile.start}-{step} written to {log_dir}")
        bar.update(1)
        report.flush()  # the previous logged step's metrics: ready by now, no pipeline stall
        last = step == tc.steps
        if step % tc.log_every == 0 or last:
            report.log_later(step, metrics)
        is_eval, is_ckpt = step % tc.eval_every == 0 or last, step % tc.ckpt_every == 0 or last
        if is_eval or is_ckpt:
            report.flush()
            if is_eval:
                eval_result = trainer.evaluate(state.params, data.eval_batches)
                writer.write_scalars(step, eval_result, split="eval")
                say(
                    f"step {step}: eval loss {eval_result['loss']:.4f}, bits/byte {eval_result['bits_per_byte']:.4f}"
                )
            if is_ckpt:
                data_states = {"processes": parallel.allgather_json(data.train.get_state())}
                ckpt.save(step, state, data_state=data_states, meta={"config": to_dict(cfg)})
                writer.flush()  # metrics up to a checkpoint survive a crash
            jax.block_until_ready(state)
            report.resume_timing(step)
    report.flush()
    bar.close()
    ckpt.wait()
    ckpt.close()

    if not eval_result:  # resumed at the final step: evaluate what was restored
        eval_result = trainer.evaluate(state.params, data.eval_batches)
    sample = (
        sample_text(trainer.model, state.params, data.tokenizer, cfg, tc.seed) if tc.sample_tokens else ""
    )
    if sample:
        writer.write_text(tc.steps, "sample", sample)
    writer.close()
    result = {
        "step": int(state.step),
        "eval_loss": eval_result["loss"],
        "eval_bits_per_byte": eval_result["bits_per_byte"],
        "sample": sample,
        "checkpoints": ckpt_dir,
        "logs": log_dir,
    }
    say(
        f"\nfinal validation: loss {eval_result['loss']:.4f} nats/token, {eval_result['bits_per_byte']:.4f} bits/byte"
    )
    if sample:
        say(f"sample:\n{'-' * 40}\n{sample}\n{'-' * 40}")
    say(f"checkpoints: {ckpt_dir}\nlogs (TensorBoard + metrics.jsonl): {log_dir}")
    if lead:
        with open(os.path.join(workdir, "result.json"), "w") as f:
            json.dump(result, f, indent=2)
    return result

"""`python -m rocket.generate` on a tiny checkpoint written the way rocket.train writes it."""

import dataclasses
import os
import pathlib
import subprocess
import sys

import pytest
from absl import flags

from rocket import generate as gen_cli
from rocket.decode import METHODS
from tests.helpers import save_tiny_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("gen") / "run"
    save_tiny_run(workdir)
    return str(workdir)


def test_cli_decodes_a_checkpoint_with_a_draft_and_reports_stats(tiny_run):
    workdir = pathlib.Path(tiny_run)
    cmd = [
        sys.executable,
        "-m",
        "rocket.generate",
        f"--checkpoint={workdir}",
        f"--draft_checkpoint={workdir}",
    ]
    cmd += ["--method=speculative", "--max_new_tokens=12", "--temperature=0.8", "--prompt=def f"]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=os.environ)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.strip().splitlines()
    assert lines[0].startswith("def f")
    # The target drafting for itself accepts every draft: 5 tokens per target call (gamma = 4).
    assert "tokens/s" in lines[-1] and "acceptance 1.000" in lines[-1], lines[-1]
    bad = subprocess.run(cmd[:4] + ["--method=beam"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "unknown decoding method" in bad.stderr
    bad = subprocess.run(cmd[:4] + ["--step=7"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        f"error: No checkpoint step 7 in {str(workdir / 'checkpoints')!r}; available steps: [1]."
    ], bad.stderr


# ------------------------------------------------------- in-process: bad input, method args, batches


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    flags.FLAGS.unparse_flags()
    try:
        gen_cli.run(["rocket.generate", *args])
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--temperature=-0.5"], "--temperature must be >= 0"),
        (["--temperature=1", "--top_p=1.5"], "--top_p must be in (0, 1]"),
        (["--temperature=1", "--top_p=0"], "--top_p must be in (0, 1]"),
        (["--temperature=1", "--top_k=-2"], "--top_k must be >= 0"),
        (["--top_k=5"], "no effect with --temperature 0"),
        (["--top_p=0.9"], "no effect with --temperature 0"),
        (["--method=contrastive", "--temperature=0.7"], "'contrastive' is deterministic"),
        (["--method=speculative"], "needs a draft model: pass --draft_checkpoint"),
        (["--method=token_recycling", "--method_arg=kk=4"], "no parameter 'kk'; the parameters are"),
        (["--method=token_recycling", "--method_arg=k=four"], "expected int, got 'four'"),
        (["--method=contrastive", "--method_arg=alpha=2.0"], "alpha"),
        (["--method_arg=k"], "expected NAME=VALUE"),
        (["--prompts_file=/nonexistent/prompts.txt"], "--prompts_file"),
        (["--bogus=1"], "bogus"),
    ],
)
def test_bad_input_is_one_error_line_and_exit_2(capsys, tiny_run, args, message):
    code, _, err = _cli(capsys, f"--checkpoint={tiny_run}", *args)
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert message in err, err


def test_method_args_set_any_registered_methods_fields():
    spec = gen_cli.method_with_args("speculative", METHODS["speculative"], ["branching=1,1,1,1,1,1"])
    assert spec.branching == (1,) * 6 and spec == dataclasses.replace(
        METHODS["speculative"], branching=(1,) * 6
    )
    tree = gen_cli.method_with_args(
        "tree", METHODS["tree"], ["branching=(4, 2)", "sampling=without_replacement"]
    )
    assert tree.branching == (4, 2) and tree.sampling == "without_replacement"
    tr = gen_cli.method_with_args("token_recycling", METHODS["token_recycling"], ["k=10"])
    assert tr.k == 10 and tr.template == METHODS["token_recycling"].template
    cs = gen_cli.method_with_args("contrastive", METHODS["contrastive"], ["top_k=8", "alpha=0.4"])
    assert (cs.top_k, cs.alpha) == (8, 0.4)
    st = gen_cli.method_with_args(
        "streaming", METHODS["streaming"], ["stream.window=60", "stream.max_distance=None"]
    )
    assert st.stream.window == 60 and st.stream.n_sinks == METHODS["streaming"].stream.n_sinks


def test_prompts_file_decodes_as_one_batch_equal_to_one_prompt_at_a_time(capsys, tiny_run, tmp_path):
    prompts = ["def f(x):", "import os", "class A:"]
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(prompts) + "\n\n")
    common = [f"--checkpoint={tiny_run}", "--max_new_tokens=6"]
    code, out, err = _cli(capsys, *common, f"--prompts_file={path}")
    assert code == 0, err
    lines = out.strip().splitlines()
    texts = [lines[lines.index(f"--- prompt {b}") + 1] for b in range(3)]
    assert "nan" not in lines[-1] and "mean_accepted_tokens 1.000" in lines[-1], lines[-1]  # AR: 1 per call
    for p, batched in zip(prompts, texts):
        code, single, _ = _cli(capsys, *common, f"--prompt={p}")
        assert code == 0 and single.splitlines()[0] == batched  # greedy: batching changes nothing


def test_help_lists_the_flags(capsys):
    code, out, _ = _cli(capsys, "--help")
    assert code == 0 and "--method_arg" in out and "--prompts_file" in out
